"""Stage `build`: the image builds locally with the Docker SDK for linux/amd64 (what Cloud Run runs);
log streamed; id, size and the image's platform (read back from the built image) recorded.

Not built again when an earlier run already pushed an image for the same build key (repository, commit,
Dockerfile content, build args, context tree, platform, labels: stagecheck.pushed_images) and that
digest is still in the registry: a run retried after a failure past the push deploys the same digest."""

from __future__ import annotations

import asyncio

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from stagecheck.clients.images import BuildFailed, Images
from stagecheck.container_platform import CLOUD_RUN_PLATFORM, judge_platform
from stagecheck.errors import StageError
from stagecheck.model import Criterion, Evidence, ImageInfo, StageResult, Status
from stagecheck.pushed_images import PushedImage, build_key, context_identity
from stagecheck.redact import redact
from stagecheck.settings import ServiceConfig
from stagecheck.stages import Stage
from tasks.common import gate, guarded, stage_run_name


def _labels(service: ServiceConfig, git_sha: str) -> dict[str, str]:
    return {"org.opencontainers.image.revision": git_sha, "dev.stagecheck.service": service.name}


async def image_build_key(service: ServiceConfig, repository: str, git_sha: str) -> str | None:
    """The build key of the service's image at `git_sha`, or None when the Dockerfile cannot be read (the
    build then says why)."""
    try:
        dockerfile = await asyncio.to_thread((service.source_dir / service.dockerfile).read_bytes)
    except OSError:
        return None
    context = await asyncio.to_thread(context_identity, service.source_dir)
    return build_key(repository=repository, git_sha=git_sha, dockerfile=dockerfile, build_args=service.build_args,
                     context=context, platform=CLOUD_RUN_PLATFORM, labels=_labels(service, git_sha))


async def pushed_earlier(images: Images, key: str, repository: str) -> tuple[PushedImage | None, str]:
    """The record of an image pushed for `key` whose digest is still in `repository`, else None and why."""
    if images.pushed is None:
        return None, "no record store"
    record = await images.pushed.find(key)
    if record is None:
        return None, "no image pushed for these inputs yet"
    if record.repository != repository or record.pinned != f"{repository}@{record.digest}":
        return None, f"the record names {record.pinned}, not an image of {repository}"
    try:
        await images.manifest_size(record.pinned)
    except StageError as exc:  # deleted (or unreadable): build it again
        return None, f"{record.pinned} recorded but not usable: {exc}"
    return record, "in the registry"


def _reused_result(record: PushedImage, reference: str) -> StageResult:
    platform_ok = record.image_platform == CLOUD_RUN_PLATFORM
    summary = (f"not rebuilt: {record.pinned} was pushed for this commit, Dockerfile and build args"
               f"{f' by flow run {record.flow_run_id}' if record.flow_run_id else ''} and is still in the registry")
    status = Status.PASS if platform_ok else Status.FAIL
    return StageResult(
        name=Stage.BUILD, status=status, summary=summary,
        evidence=[Evidence(kind="docker", summary=summary,
                           data={"reused": True, "build_key": record.key, "digest": record.digest,
                                 "image_id": record.image_id, "image_platform": record.image_platform,
                                 "built_by_flow_run": record.flow_run_id})],
        criteria=[Criterion(name="Image builds", stage=Stage.BUILD, status=Status.PASS,
                            expected="docker build succeeds", observed=f"{reference} built and pushed earlier"),
                  Criterion(name="Image is built for Cloud Run's platform", stage=Stage.BUILD,
                            status=status, expected=CLOUD_RUN_PLATFORM, observed=record.image_platform or "unknown")],
        data={"reused": True, "build_key": record.key},
    )


@task(name="build", cache_policy=NO_CACHE, task_run_name=stage_run_name(Stage.BUILD))
async def build_image(images: Images, service: ServiceConfig, repository: str, git_sha: str,
                      extra_tags: tuple[str, ...] = ()) -> tuple[StageResult, ImageInfo | None]:
    """Build the service's image for Cloud Run's platform (linux/amd64), tagged with the git SHA, unless the
    same inputs were pushed before and are still in the registry; the log streams to the run, the image's id,
    size and platform are the evidence."""
    logger = get_run_logger()
    reference = f"{repository}:{git_sha}"

    async def body() -> tuple[StageResult, ImageInfo | None]:
        context = service.source_dir
        key = await image_build_key(service, repository, git_sha)
        if key is not None:
            record, why = await pushed_earlier(images, key, repository)
            if record is not None:
                info = ImageInfo(reference=reference, image_id=record.image_id, digest=record.digest,
                                 pinned=record.pinned, local_size_bytes=record.local_size_bytes,
                                 tags=[git_sha, *extra_tags], build_key=key, reused=True,
                                 platform=record.image_platform or None)
                return _reused_result(record, reference), info
            logger.info("building %s: %s", reference, why)
        try:
            result = await asyncio.to_thread(
                images.build, context, service.dockerfile, reference, build_args=service.build_args,
                labels=_labels(service, git_sha),
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
                         tags=[git_sha, *extra_tags], build_key=key,
                         platform=f"{result.image_os}/{result.image_arch}")
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
            data={"duration_s": result.duration_s, "reused": False, "build_key": key},
        ), info

    stage, info = await guarded(Stage.BUILD, body, None, logger)
    return gate(stage, (stage, info))
