"""Build and push the sample service image (examples/sample-service) with the Docker SDK.

The image is `FROM scratch` plus a static busybox, so nothing is pulled. Its Dockerfile is multi-stage:
it copies `/bin/busybox` from the image named by the build argument BUSYBOX_IMAGE (default
`stagecheck-busybox:static`), a base image made here from the host's `/usr/bin/busybox` (package
busybox-static) and kept in the Docker Engine, the way a team keeps its base images in a registry. So the
build context is only committed files: a per-run checkout of any commit builds.
"""

from __future__ import annotations

import re
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_SERVICE_DIR = REPO_ROOT / "examples" / "sample-service"
HOST_BUSYBOX = Path("/usr/bin/busybox")
IMAGE_LABEL = "dev.stagecheck.sample"
BASE_IMAGE = "stagecheck-busybox:static"  # the Dockerfile's default BUSYBOX_IMAGE
BASE_LABEL = "dev.stagecheck.base"
BASE_DOCKERFILE = "FROM scratch\nCOPY busybox /bin/busybox\nENV PATH=/bin\n"

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


def check_busybox(busybox: Path = HOST_BUSYBOX) -> Path:
    """The host's busybox, if it can run FROM scratch (statically linked); SampleImageError otherwise."""
    if not busybox.is_file():
        raise SampleImageError(f"{busybox} not found: install busybox-static (run `make setup`)")
    if not is_static_elf(busybox):
        raise SampleImageError(
            f"{busybox} is dynamically linked and cannot run FROM scratch: "
            "install busybox-static (run `make setup`)"
        )
    return busybox


def ensure_base_image(docker_client: docker.DockerClient, busybox: Path = HOST_BUSYBOX,
                      tag: str = BASE_IMAGE) -> str:
    """Build the busybox base image `tag` in the engine unless it has it (idempotent; parallel callers
    build identical images). Returns the tag."""
    try:
        docker_client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    check_busybox(busybox)
    with tempfile.TemporaryDirectory(prefix="stagecheck-busybox-") as tmp:
        shutil.copy2(busybox, Path(tmp) / "busybox")
        (Path(tmp) / "Dockerfile").write_text(BASE_DOCKERFILE)
        try:
            docker_client.images.build(path=tmp, tag=tag, rm=True, forcerm=True, labels={BASE_LABEL: "1"})
        except docker.errors.BuildError as exc:
            raise SampleImageError(f"build of the base image {tag} failed: {exc.msg}") from exc
        except docker.errors.APIError as exc:
            raise SampleImageError(f"docker engine refused {tag}: {exc.explanation or exc}") from exc
    return tag


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
    if not (context / "Dockerfile").is_file():
        raise SampleImageError(f"sample service build context not found: {context}/Dockerfile")
    ensure_base_image(docker_client)
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
