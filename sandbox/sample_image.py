"""Build and push the sample service image (examples/sample-service) with the Docker SDK.

The image is `FROM scratch` plus a static busybox, so nothing is pulled: the build context's
`bin/busybox` is a copy of the host's `/usr/bin/busybox` (package busybox-static), made here.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_SERVICE_DIR = REPO_ROOT / "examples" / "sample-service"
HOST_BUSYBOX = Path("/usr/bin/busybox")
IMAGE_LABEL = "dev.stagecheck.sample"

_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_REPOSITORY = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*")
_PT_INTERP = 3


class SampleImageError(RuntimeError):
    """The sample image could not be prepared, built or pushed (one-line message)."""


@dataclass(frozen=True)
class SampleImage:
    ref: str  # registry/repository:tag
    digest: str  # sha256:... of the pushed manifest
    digest_ref: str  # registry/repository@sha256:...
    image_id: str  # local image id (sha256:...)
    size: int  # bytes, as the engine reports it


def is_static_elf(path: Path) -> bool:
    """True if `path` is an ELF executable without a program interpreter (statically linked)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF":
        return False
    is_64 = data[4] == 2
    endian = "<" if data[5] == 1 else ">"
    if is_64:
        phoff, = struct.unpack_from(endian + "Q", data, 0x20)
        phentsize, phnum = struct.unpack_from(endian + "HH", data, 0x36)
    else:
        phoff, = struct.unpack_from(endian + "I", data, 0x1C)
        phentsize, phnum = struct.unpack_from(endian + "HH", data, 0x2A)
    for index in range(phnum):
        p_type, = struct.unpack_from(endian + "I", data, phoff + index * phentsize)
        if p_type == _PT_INTERP:
            return False
    return True


def ensure_build_context(context: Path = SAMPLE_SERVICE_DIR, busybox: Path = HOST_BUSYBOX) -> Path:
    """Copy the host's static busybox into `context/bin/busybox` unless it is there already."""
    if not (context / "Dockerfile").is_file():
        raise SampleImageError(f"sample service build context not found: {context}/Dockerfile")
    target = context / "bin" / "busybox"
    if target.is_file():
        return context
    if not busybox.is_file():
        raise SampleImageError(f"{busybox} not found: install busybox-static (run `make setup`)")
    if not is_static_elf(busybox):
        raise SampleImageError(
            f"{busybox} is dynamically linked and cannot run FROM scratch: "
            "install busybox-static (run `make setup`)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".partial-{os.getpid()}")  # test workers may copy at the same time
    shutil.copy2(busybox, partial)
    partial.replace(target)
    return context


def _push_digest(events: Any) -> str:
    """The manifest digest from a push's progress stream, or a SampleImageError."""
    digest = ""
    for event in events:
        if "error" in event:
            raise SampleImageError(f"push failed: {event['error']}")
        aux = event.get("aux") or {}
        digest = aux.get("Digest", digest)
    if not digest.startswith("sha256:"):
        raise SampleImageError("push finished without reporting a manifest digest")
    return digest


def build_sample_image(
    docker_client: docker.DockerClient,
    registry: str,
    tag: str,
    *,
    repository: str = "stagecheck-sample",
    context: Path = SAMPLE_SERVICE_DIR,
) -> SampleImage:
    """Build examples/sample-service as `registry/repository:tag`, push it, return its digest."""
    if not _TAG.fullmatch(tag):
        raise SampleImageError(f"invalid image tag {tag!r}")
    if not _REPOSITORY.fullmatch(repository):
        raise SampleImageError(f"invalid repository name {repository!r}")
    ensure_build_context(context)
    name = f"{registry}/{repository}"
    ref = f"{name}:{tag}"
    try:
        image, _ = docker_client.images.build(
            path=str(context), tag=ref, rm=True, forcerm=True, labels={IMAGE_LABEL: "1"}
        )
        digest = _push_digest(docker_client.images.push(name, tag=tag, stream=True, decode=True))
    except docker.errors.BuildError as exc:
        raise SampleImageError(f"build of {ref} failed: {exc.msg}") from exc
    except docker.errors.APIError as exc:
        raise SampleImageError(f"docker engine refused {ref}: {exc.explanation or exc}") from exc
    image.reload()
    return SampleImage(
        ref=ref,
        digest=digest,
        digest_ref=f"{name}@{digest}",
        image_id=str(image.id),
        size=int(image.attrs.get("Size", 0)),
    )
