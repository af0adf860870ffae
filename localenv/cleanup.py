"""Remove what test sessions and benchmarks leave in the local registry and Docker Engine.

Test sessions push the sample image as `stagecheck-sample:test-<hex>` and the pipeline tests push one
repository per test service (`<prefix>-<8 hex>`); nothing removed them, so the registry grew with
every session. The local registry (distribution 2.8) cannot delete a tag through its API (a manifest
DELETE takes a digest and would drop every tag sharing it, `v1` included), so a tag is removed the
way distribution's own tag deletion does it: its directory under the filesystem storage goes. Blobs
stay until the registry's garbage collector runs (the sample image is ~2 MB and shared).

    python -m localenv.cleanup [--state-dir .stagecheck] [--older-than 3600] [--dry-run]   # make clean-registry
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from localenv.infra import infra_paths, read_infra_json, registry_config

SAMPLE_REPOSITORY = "stagecheck-sample"
SESSION_TAG = re.compile(r"^(?:test|bench|soak)-[0-9a-f]{8,12}$")  # per-session tags of the sample image
TEST_REPOSITORY = re.compile(r"^[a-z][a-z0-9-]*-[0-9a-f]{8}$")  # tests' unique_name(): prefix-<8 hex>


@dataclass
class Pruned:
    tags: list[str] = field(default_factory=list)  # repository:tag
    repositories: list[str] = field(default_factory=list)


def repositories_dir(state_dir: Path) -> Path:
    """Where the local registry (localenv/infra.py) keeps its repositories on disk."""
    storage = registry_config(infra_paths(Path(state_dir)), "")["storage"]
    root = Path(storage["filesystem"]["rootdirectory"])  # type: ignore[index]
    return root / "docker" / "registry" / "v2" / "repositories"


def remove_tag(state_dir: Path, repository: str, tag: str) -> bool:
    """Untag `repository:tag` (other tags of the same digest stay). True when it existed."""
    path = repositories_dir(state_dir) / repository / "_manifests" / "tags" / tag
    if not path.is_dir():
        return False
    shutil.rmtree(path, ignore_errors=True)
    return True


def remove_repository(state_dir: Path, repository: str) -> bool:
    """Forget a whole repository (every tag of it). True when it existed."""
    path = repositories_dir(state_dir) / repository
    if "/" in repository or repository in {"", ".", ".."} or not path.is_dir():
        return False
    shutil.rmtree(path, ignore_errors=True)
    return True


def remove_local_images(docker_host: str | None, references: list[str]) -> int:
    """Remove these image references from the Docker Engine (untag; layers go with the last tag)."""
    if not references or not docker_host:
        return 0
    import docker
    import docker.errors

    removed = 0
    client = docker.DockerClient(base_url=docker_host, timeout=30)
    try:
        for ref in references:
            with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
                client.images.remove(ref)
                removed += 1
    finally:
        client.close()
    return removed


def remove_local_repository(docker_host: str | None, name: str) -> int:
    """Remove every local tag of `name` (registry/repository) from the Docker Engine."""
    if not docker_host:
        return 0
    import docker

    client = docker.DockerClient(base_url=docker_host, timeout=30)
    try:
        refs = [tag for image in client.images.list(name=name) for tag in image.tags if tag.startswith(f"{name}:")]
    finally:
        client.close()
    return remove_local_images(docker_host, refs)


def _age_s(path: Path, now: float) -> float:
    """Seconds since a file under `path` last changed (a push writes the tag's link files)."""
    newest: float | None = None
    for dirpath, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                mtime = (Path(dirpath) / name).stat().st_mtime
                newest = mtime if newest is None else max(newest, mtime)
    return now - (path.stat().st_mtime if newest is None else newest)


def prune(state_dir: Path, older_than_s: float, *, dry_run: bool = False) -> Pruned:
    """Session tags of the sample image and tests' one-off repositories not pushed to for `older_than_s`
    (a session still running pushed more recently, so what it uses stays)."""
    root = repositories_dir(state_dir)
    out = Pruned()
    now = time.time()
    if not root.is_dir():
        return out
    tags_dir = root / SAMPLE_REPOSITORY / "_manifests" / "tags"
    if tags_dir.is_dir():
        for tag in sorted(p.name for p in tags_dir.iterdir()):
            if SESSION_TAG.match(tag) and _age_s(tags_dir / tag, now) >= older_than_s:
                out.tags.append(f"{SAMPLE_REPOSITORY}:{tag}")
                if not dry_run:
                    remove_tag(state_dir, SAMPLE_REPOSITORY, tag)
    for repo in sorted(p.name for p in root.iterdir() if p.is_dir()):
        if TEST_REPOSITORY.match(repo) and _age_s(root / repo / "_manifests", now) >= older_than_s:
            out.repositories.append(repo)
            if not dry_run:
                remove_repository(state_dir, repo)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localenv.cleanup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", default=os.environ.get("STAGECHECK_STATE_DIR", ".stagecheck"))
    parser.add_argument("--older-than", type=float, default=3600.0,
                        help="only what nobody pushed to for this many seconds (default: %(default)s)")
    parser.add_argument("--registry", default="127.0.0.1:5000", help="prefix of the local image references")
    parser.add_argument("--dry-run", action="store_true", help="list, remove nothing")
    args = parser.parse_args(argv)
    if args.older_than < 0:
        print("--older-than: seconds, 0 or more", file=sys.stderr)
        return 2
    state_dir = Path(args.state_dir)
    pruned = prune(state_dir, args.older_than, dry_run=args.dry_run)
    refs = [f"{args.registry}/{t}" for t in pruned.tags]
    local = 0
    if not args.dry_run:
        infra = read_infra_json(state_dir)
        local = remove_local_images(infra.docker_host if infra else None, refs)
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {len(pruned.tags)} session tag(s) of {SAMPLE_REPOSITORY} and {len(pruned.repositories)} "
          f"test repositor(ies) from the registry; {local} local image tag(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
