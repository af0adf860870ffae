"""Stage `build`: the image builds locally with the Docker SDK for linux/amd64 (what Cloud Run runs);
log streamed; id, size and the image's platform (read back from the built image) recorded."""

from __future__ import annotations

import asyncio

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from stagecheck.clients.images import BuildFailed, Images
from stagecheck.container_platform import CLOUD_RUN_PLATFORM, judge_platform
from stagecheck.model import Criterion, Evidence, ImageInfo, StageResult, Status
from stagecheck.redact import redact
from stagecheck.settings import ServiceConfig
from stagecheck.stages import Stage
from tasks.common import gate, guarded, stage_run_name


@task(name="build", cache_policy=NO_CACHE, task_run_name=stage_run_name(Stage.BUILD))
async def build_image(images: Images, service: ServiceConfig, repository: str, git_sha: str,
                      extra_tags: tuple[str, ...] = ()) -> tuple[StageResult, ImageInfo | None]:
    """Build the service's image for Cloud Run's platform (linux/amd64), tagged with the git SHA; the log
    streams to the run, the image's id, size and platform are the evidence."""
    logger = get_run_logger()
    reference = f"{repository}:{git_sha}"

    async def body() -> tuple[StageResult, ImageInfo | None]:
        context = service.source_dir
        try:
            result = await asyncio.to_thread(
                images.build, context, service.dockerfile, reference, build_args=service.build_args,
                labels={"org.opencontainers.image.revision": git_sha, "dev.stagecheck.service": service.name},
                on_log=lambda line: logger.info("[build %s] %s", service.name, redact(line)),
                platform=CLOUD_RUN_PLATFORM,
            )
        except BuildFailed as exc:
            tail = [redact(line) for line in exc.tail]
            return StageResult(
                name=Stage.BUILD, status=Status.FAIL, summary=str(exc),
                evidence=[Evidence(kind="docker", summary=f"build log tail ({len(tail)} lines)",
                                   data={"log_tail": tail})],
                criteria=[Criterion(name="Image builds", stage=Stage.BUILD, status=Status.FAIL,
                                    expected="docker build succeeds", observed=str(exc), evidence=tail[-3:])],
            ), None
        for extra in extra_tags:
            await asyncio.to_thread(images.tag, result.image_id, repository, extra)
        info = ImageInfo(reference=reference, image_id=result.image_id, local_size_bytes=result.size_bytes,
                         tags=[git_sha, *extra_tags])
        mb = result.size_bytes / 1e6
        platform = judge_platform(result.image_os, result.image_arch, result.engine_os, result.engine_arch)
        summary = (f"built {reference} ({result.image_id[:19]}, {mb:.1f} MB, {result.image_os}/{result.image_arch}) "
                   f"in {result.duration_s:.1f}s")
        if platform.note:
            summary += f"; {platform.note}"
        status = Status.FAIL if platform.status is Status.FAIL else Status.PASS
        return StageResult(
            name=Stage.BUILD, status=status, summary=summary if status is Status.PASS else f"{summary}; {platform.observed}",
            evidence=[Evidence(kind="docker", summary=summary,
                               data={"image_id": result.image_id, "size_bytes": result.size_bytes,
                                     "platform": result.platform,
                                     "image_platform": f"{result.image_os}/{result.image_arch}",
                                     "architecture": result.image_arch,
                                     "engine_platform": f"{result.engine_os}/{result.engine_arch}",
                                     "log_lines": result.log_lines, "log_tail": [redact(x) for x in result.log_tail[-10:]]})],
            criteria=[Criterion(name="Image builds", stage=Stage.BUILD, status=Status.PASS,
                                expected="docker build succeeds", observed=summary),
                      Criterion(name="Image is built for Cloud Run's platform", stage=Stage.BUILD, status=platform.status,
                                expected=CLOUD_RUN_PLATFORM, observed=platform.observed,
                                evidence=[platform.note] if platform.note else [])],
            data={"duration_s": result.duration_s},
        ), info

    stage, info = await guarded(Stage.BUILD, body, None, logger)
    return gate(stage, (stage, info))
