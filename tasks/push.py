"""Stage `push`: the image is in the registry, tagged with the git SHA and pinned by digest."""

from __future__ import annotations

import asyncio

from prefect import task
from prefect.cache_policies import NO_CACHE

from stagecheck.clients.images import Images
from stagecheck.errors import StageError
from stagecheck.model import Criterion, Evidence, ImageInfo, StageResult, Status
from stagecheck.stages import Stage
from tasks.common import gate, guarded


def _mb(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.2f} MB"


@task(name="push", cache_policy=NO_CACHE, task_run_name=Stage.PUSH)
async def push_image(images: Images, image: ImageInfo, repository: str,
                     previous_image: str | None) -> tuple[StageResult, ImageInfo]:
    """Push the image's tags to the registry and pin it by digest; the size against the serving image is evidence."""
    async def body() -> tuple[StageResult, ImageInfo]:
        result = await asyncio.to_thread(images.push, repository, list(image.tags))
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
        summary = f"pushed {result.pinned} (tags {', '.join(result.tags)}) in {result.duration_s:.1f}s"
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
