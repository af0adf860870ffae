"""Container images: build and push with the Docker SDK, read manifests from the registry.

Artifact Registry / gcr.io get an OAuth access token from google-auth (never logged); a local
registry on loopback is plain HTTP without auth (as the sandbox's is).
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
import requests
import urllib3

from stagecheck.clients.result_storage import PushedImageRecords
from stagecheck.errors import Api, ErrorClass, StageError, error_class, hint_for

MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
])
_LOOPBACK = re.compile(r"^(127\.[0-9.]+|localhost|\[::1\])(:[0-9]+)?$")
GOOGLE_REGISTRY = re.compile(r"(^|\.)(pkg\.dev|gcr\.io)$")


@dataclass(frozen=True)
class ImageRef:
    """`host/path/name` plus an optional tag or digest."""

    repository: str  # host/path/name
    tag: str | None = None
    digest: str | None = None

    @property
    def host(self) -> str:
        return self.repository.split("/", 1)[0]

    @property
    def path(self) -> str:
        return self.repository.split("/", 1)[1] if "/" in self.repository else self.repository

    def __str__(self) -> str:
        if self.digest:
            return f"{self.repository}@{self.digest}"
        return f"{self.repository}:{self.tag or 'latest'}"

    @classmethod
    def parse(cls, ref: str) -> ImageRef:
        if "@" in ref:
            repo, digest = ref.split("@", 1)
            return cls(repo, None, digest)
        last = ref.rsplit("/", 1)[-1]
        if ":" in last:
            repo, tag = ref.rsplit(":", 1)
            return cls(repo, tag, None)
        return cls(ref, "latest", None)


def registry_base_url(host: str) -> str:
    return f"http://{host}" if _LOOPBACK.match(host) else f"https://{host}"


def google_access_token() -> str:
    """An OAuth token from Application Default Credentials, for Artifact Registry."""
    import google.auth
    import google.auth.transport.requests
    from google.auth import exceptions as auth_exc

    try:
        creds, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
        creds.refresh(google.auth.transport.requests.Request())  # type: ignore[no-untyped-call]
    except auth_exc.GoogleAuthError as exc:
        raise StageError("registry auth: no usable Google credentials",
                         hint=f"{type(exc).__name__}; run `gcloud auth application-default login`") from None
    return str(creds.token)


@dataclass
class BuildResult:
    image_id: str
    size_bytes: int
    duration_s: float
    log_tail: list[str] = field(default_factory=list)
    log_lines: int = 0
    platform: str = ""  # what the build asked for, e.g. linux/amd64
    image_os: str = ""  # read back from the built image
    image_arch: str = ""
    engine_os: str = ""  # the Docker Engine that built it
    engine_arch: str = ""


@dataclass
class PushResult:
    digest: str
    pinned: str
    duration_s: float
    tags: list[str] = field(default_factory=list)


class Images:
    """Docker Engine (build/push) and registry (manifest) access for one target."""

    def __init__(self, docker_host: str | None, *, token_provider: Callable[[], str] = google_access_token,
                 tail_lines: int = 40, registry_auth: tuple[str, str] | None = None,
                 google_login: bool = False) -> None:
        self.docker_host = docker_host
        self._google_login = google_login  # the registry is Artifact Registry under another name (settings)
        self._registry_auth = registry_auth  # (username, password) for a registry that is not Google's
        self.http = httpx.AsyncClient()  # registry manifests; one pool for the run (honours proxy env)
        self._token_provider = token_provider
        self._docker: docker.DockerClient | None = None
        self.tail_lines = tail_lines
        # records of pushed images by build key (result storage): a build of the same inputs reuses the digest
        self.pushed: PushedImageRecords | None = None

    @property
    def docker(self) -> docker.DockerClient:
        if self._docker is None:
            try:
                client = docker.DockerClient(base_url=self.docker_host) if self.docker_host else docker.from_env()
                client.ping()
            except docker.errors.DockerException as exc:
                where = self.docker_host or "DOCKER_HOST / default socket"
                raise StageError(f"no Docker Engine answers at {where}",
                                 hint=f"{type(exc).__name__}; run `make up`") from None
            self._docker = client
        return self._docker

    async def aclose(self) -> None:
        await self.http.aclose()

    @property
    def _where(self) -> str:
        return self.docker_host or "DOCKER_HOST / default socket"

    def _google(self, host: str) -> bool:
        """Does this registry take `oauth2accesstoken` + a Google access token (Artifact Registry, gcr.io)?"""
        return self._google_login or bool(GOOGLE_REGISTRY.search(host.split(":")[0]))

    def _auth_config(self, host: str) -> dict[str, str] | None:
        if self._google(host):
            return {"username": "oauth2accesstoken", "password": self._token_provider()}
        if self._registry_auth is not None:
            return {"username": self._registry_auth[0], "password": self._registry_auth[1]}
        return None

    # -- build ------------------------------------------------------------------------------
    def build(self, context: Path, dockerfile: str, tag: str, *, build_args: dict[str, str] | None = None,
              labels: dict[str, str] | None = None, on_log: Callable[[str], None] = lambda _: None,
              platform: str = "linux/amd64") -> BuildResult:
        """Build `tag` for `platform` (Cloud Run runs linux/amd64); the result says what the image and the
        engine are."""
        if not context.is_dir():
            raise StageError(f"build context {context} is not a directory")
        if not (context / dockerfile).is_file():
            raise StageError(f"no Dockerfile: {context / dockerfile} does not exist")
        tail: deque[str] = deque(maxlen=self.tail_lines)
        count = 0
        image_id: str | None = None
        started = time.monotonic()
        try:
            stream = self.docker.api.build(path=str(context), dockerfile=dockerfile, tag=tag, rm=True, forcerm=True,
                                           decode=True, buildargs=build_args or {}, labels=labels or {},
                                           platform=platform)
            for chunk in stream:
                text = chunk.get("stream") or chunk.get("status") or ""
                for line in str(text).splitlines():
                    if line.strip():
                        tail.append(line)
                        count += 1
                        on_log(line)
                if "error" in chunk or "errorDetail" in chunk:
                    message = str(chunk.get("error") or chunk.get("errorDetail", {}).get("message", "build failed"))
                    tail.append(message)
                    raise BuildFailed(message.strip(), list(tail))
                aux = chunk.get("aux")
                if isinstance(aux, dict) and "ID" in aux:
                    image_id = str(aux["ID"])
        except docker.errors.APIError as exc:
            raise BuildFailed(f"Docker Engine refused the build: {exc.explanation or exc}", list(tail)) from None
        except docker.errors.DockerException as exc:
            raise StageError(f"build failed: {type(exc).__name__}: {exc}") from None
        except ENGINE_LOST as exc:
            raise BuildFailed(f"the Docker Engine at {self._where} stopped answering during the build "
                              f"({type(exc).__name__}) after {count} log lines", list(tail)) from None
        try:
            image = self.docker.images.get(image_id or tag)
        except docker.errors.ImageNotFound:
            raise BuildFailed("the build finished without producing an image", list(tail)) from None
        try:
            engine = self.docker.version()
        except docker.errors.DockerException:
            engine = {}
        return BuildResult(image_id=str(image.id), size_bytes=int(image.attrs.get("Size", 0)),
                           duration_s=time.monotonic() - started, log_tail=list(tail), log_lines=count,
                           platform=platform, image_os=str(image.attrs.get("Os", "")),
                           image_arch=str(image.attrs.get("Architecture", "")),
                           engine_os=str(engine.get("Os", "")), engine_arch=str(engine.get("Arch", "")))

    # -- push -------------------------------------------------------------------------------
    def push(self, repository: str, tags: list[str]) -> PushResult:
        """Push every tag; returns the registry digest (identical for all tags of one image)."""
        host = repository.split("/", 1)[0]
        auth = self._auth_config(host)
        started = time.monotonic()
        digest: str | None = None
        for tag in tags:
            try:
                for chunk in self.docker.api.push(repository, tag=tag, stream=True, decode=True, auth_config=auth):
                    if "error" in chunk or "errorDetail" in chunk:
                        raise StageError(f"push of {repository}:{tag} failed: "
                                         f"{_describe_push_error(str(chunk.get('error') or chunk.get('errorDetail')))}")
                    aux = chunk.get("aux")
                    if isinstance(aux, dict) and aux.get("Digest"):
                        digest = str(aux["Digest"])
            except docker.errors.APIError as exc:
                raise StageError(f"push of {repository}:{tag} failed: {_describe_push_error(str(exc.explanation or exc))}") from None
            except ENGINE_LOST as exc:
                raise StageError(f"push of {repository}:{tag} failed: the Docker Engine at {self._where} stopped "
                                 f"answering during the push ({type(exc).__name__})") from None
        if digest is None:
            raise StageError(f"push of {repository} reported no digest")
        return PushResult(digest=digest, pinned=f"{repository}@{digest}",
                          duration_s=time.monotonic() - started, tags=tags)

    def tag(self, image_id: str, repository: str, tag: str) -> None:
        self.docker.api.tag(image_id, repository, tag=tag)

    # -- registry ---------------------------------------------------------------------------
    async def manifest_size(self, ref: str, *, timeout_s: float = 15.0) -> int:
        """Compressed size of an image in its registry (config + layers), as pulled."""
        parsed = ImageRef.parse(ref)
        reference = parsed.digest or parsed.tag or "latest"
        headers = {"Accept": MANIFEST_TYPES}
        if self._google(parsed.host):
            token = await asyncio.to_thread(self._token_provider)
            headers["Authorization"] = f"Bearer {token}"
        elif self._registry_auth is not None:
            user, password = self._registry_auth
            headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        base = registry_base_url(parsed.host)
        url = f"{base}/v2/{parsed.path}/manifests/{reference}"
        try:
            manifest = await _get_json(self.http, url, headers, timeout_s)
            if "manifests" in manifest:  # an index: take the linux/amd64 (or first) image
                entries = manifest["manifests"]
                chosen = next((m for m in entries if m.get("platform", {}).get("architecture") == "amd64"), entries[0])
                url = f"{base}/v2/{parsed.path}/manifests/{chosen['digest']}"
                manifest = await _get_json(self.http, url, headers, timeout_s)
        except httpx.HTTPError as exc:
            raise StageError(f"registry {parsed.host} unreachable: {type(exc).__name__}") from None
        layers = manifest.get("layers", [])
        return int(manifest.get("config", {}).get("size", 0)) + sum(int(layer.get("size", 0)) for layer in layers)


# the engine's connection dropping mid-stream (the engine stopped): urllib3 / requests, not docker.errors
ENGINE_LOST = (requests.exceptions.RequestException, urllib3.exceptions.HTTPError)


class BuildFailed(StageError):
    def __init__(self, message: str, tail: list[str]) -> None:
        super().__init__(f"build failed: {message}")
        self.tail = tail


async def _get_json(client: httpx.AsyncClient, url: str, headers: dict[str, str], timeout_s: float) -> dict[str, Any]:
    response = await client.get(url, headers=headers, timeout=timeout_s)
    kind = error_class(response.status_code)  # the one table of API errors (stagecheck.errors)
    if kind is ErrorClass.NOT_FOUND:
        raise StageError(f"image not found in the registry: {url.split('/v2/', 1)[-1]}")
    if kind in (ErrorClass.UNAUTHENTICATED, ErrorClass.FORBIDDEN):
        raise StageError(f"registry denied access ({response.status_code}) to {url.split('/v2/', 1)[-1]}",
                         hint=hint_for(Api.REGISTRY, kind))
    if response.status_code >= 400:
        raise StageError(f"registry answered {response.status_code} for {url.split('/v2/', 1)[-1]}")
    try:
        data = response.json()
    except ValueError:
        raise StageError("registry returned a manifest that is not JSON") from None
    if not isinstance(data, dict):
        raise StageError("registry returned an unexpected manifest")
    return data


def _describe_push_error(message: str) -> str:
    lowered = message.lower()
    if "connection refused" in lowered or "no such host" in lowered or "dial tcp" in lowered:
        return f"registry unreachable ({message.strip()[:200]})"
    if any(word in lowered for word in ("eof", "connection reset", "broken pipe")):
        return f"the registry stopped answering during the upload ({message.strip()[:200]})"
    if "denied" in lowered or "unauthorized" in lowered or "authentication required" in lowered:
        return f"permission denied by the registry ({hint_for(Api.REGISTRY, ErrorClass.FORBIDDEN)})"
    return message.strip()[:300]
