"""The platform Cloud Run runs: linux/amd64 (container contract: "binaries for Linux x86_64, multi-arch
images must include linux/amd64"). Pure decisions about what was built, and on what."""

from __future__ import annotations

from dataclasses import dataclass

from stagecheck.model import Status

CLOUD_RUN_PLATFORM = "linux/amd64"


@dataclass(frozen=True)
class PlatformCheck:
    status: Status
    observed: str  # what the criteria table shows
    note: str | None  # said in the build summary when the engine is not linux/amd64


def judge_platform(image_os: str, image_arch: str, engine_os: str, engine_arch: str) -> PlatformCheck:
    """PASS when the built image is linux/amd64; FAIL otherwise. A note when the engine is another
    platform (the build was cross-built/emulated: slower, and worth knowing when it misbehaves)."""
    image = f"{image_os or '?'}/{image_arch or '?'}"
    engine = f"{engine_os or '?'}/{engine_arch or '?'}"
    note = None
    if engine != CLOUD_RUN_PLATFORM:
        note = f"built for {CLOUD_RUN_PLATFORM} on a {engine} Docker Engine (cross-platform build, emulated)"
    if image != CLOUD_RUN_PLATFORM:
        return PlatformCheck(Status.FAIL, f"image is {image}, Cloud Run runs {CLOUD_RUN_PLATFORM}", note)
    return PlatformCheck(Status.PASS, f"image is {image}", note)
