"""Stage `push`: the image is in the registry, tagged with the git SHA and pinned by digest; the digest
is recorded under the build key (result storage) so that a later run of the same inputs does not build
again. An image the build stage reused is already there: nothing is pushed."""

from __future__ import annotations

import asyncio

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from stagecheck.clients.images import Images, PushResult
from stagecheck.errors import StageError
from stagecheck.model import Criterion, Evidence, ImageInfo, StageResult, Status
from stagecheck.pushed_images import PushedImage
from stagecheck.stages import Stage
from tasks.common import gate, guarded


def _mb(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.2f} MB"


async def _remember(images: Images, image: ImageInfo, repository: str, result: PushResult) -> None:
    """Record the pushed digest under the image's build key; a record that cannot be written costs a
    rebuild next time, never the release (logged)."""
    if images.pushed is None or image.build_key is None:
        return
    from prefect.context import TaskRunContext

    context = TaskRunContext.get()
    flow_run_id = str(context.task_run.flow_run_id) if context and context.task_run.flow_run_id else None
    record = PushedImage(key=image.build_key, repository=repository, git_sha=image.tags[0] if image.tags else "",
                         digest=result.digest, pinned=result.pinned, image_id=image.image_id,
                         image_platform=image.platform or "", local_size_bytes=image.local_size_bytes,
                         tags=list(result.tags), flow_run_id=flow_run_id)
    try:
        await images.pushed.remember(record)
    except Exception as exc:
        get_run_logger().warning("could not record the pushed digest of %s: %s", repository, exc)


@task(name="push", cache_policy=NO_CACHE, task_run_name=Stage.PUSH)
async def push_image(images: Images, image: ImageInfo, repository: str,
                     previous_image: str | None) -> tuple[StageResult, ImageInfo]:
    """Push the image's tags to the registry and pin it by digest (an image an earlier run pushed for the same
    inputs is only pinned); the size against the serving image is evidence."""
    async def body() -> tuple[StageResult, ImageInfo]:
        if image.reused and image.digest and image.pinned:  # pushed by an earlier run, checked still there
            result = PushResult(digest=image.digest, pinned=image.pinned, duration_s=0.0, tags=list(image.tags))
        else:
            result = await asyncio.to_thread(images.push, repository, list(image.tags))
            await _remember(images, image, repository, result)
        size = await images.manifest_size(result.pinned)
        previous_size: int | None = None
        note = "no image serving before (first deployment)"
        if previous_image:
            try:
                previous_size = await images.manifest_size(previous_image)
                delta = size - previous_size
                pct = f" ({delta / previous_size * 100:+.1f} %)" if previous_size else ""
                note = f"serving image {_mb(previous_size)} -> new {_mb(size)}: {delta / 1e6:+.2f} MB{pct}"
            except StageError as exc:
                note = f"size of the serving image unknown: {exc}"
        pushed = image.model_copy(update={"digest": result.digest, "pinned": result.pinned, "size_bytes": size,
                                          "previous_reference": previous_image, "previous_size_bytes": previous_size})
        summary = (f"already in the registry: {result.pinned} (pushed by an earlier run; not pushed again)"
                   if image.reused else f"pushed {result.pinned} (tags {', '.join(result.tags)}) in {result.duration_s:.1f}s")
        return StageResult(
            name=Stage.PUSH, status=Status.PASS, summary=summary,
            evidence=[Evidence(kind="docker", summary=summary, data={"digest": result.digest, "tags": result.tags}),
                      Evidence(kind="docker", summary=note,
                               data={"size_bytes": size, "previous_size_bytes": previous_size})],
            criteria=[Criterion(name="Image pushed and pinned by digest", stage=Stage.PUSH, status=Status.PASS,
                                expected="registry returns a digest", observed=result.digest,
                                evidence=[summary, note])],
        ), pushed

    stage, pushed = await guarded(Stage.PUSH, body, image.model_copy())
    return gate(stage, (stage, pushed))
