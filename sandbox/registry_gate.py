"""A registry that wants Google credentials, as Artifact Registry does: `oauth2accesstoken` with an OAuth access
token as the password (Basic), or the access token as a Bearer; anything else is 401 UNAUTHORIZED with the
registry's JSON error. It fronts a plain registry (another `docker-registry` on loopback) and forwards every
authenticated request unchanged; the access tokens are the sandbox's own (its token endpoint or STS).

Sources: docs artifact-registry/docs/docker/authentication (access token: `docker login -u oauth2accesstoken
--password-stdin https://LOCATION-docker.pkg.dev`); distribution's API spec (401 with `WWW-Authenticate`, error
code UNAUTHORIZED).
"""

from __future__ import annotations

import base64
from collections.abc import Callable

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

GOOGLE_USER = "oauth2accesstoken"
_HOP = {"host", "authorization", "connection", "transfer-encoding", "keep-alive", "upgrade"}


def caller_of(authorization: str, verify: Callable[[str], str | None]) -> str | None:
    """The member behind a registry request's credentials, or None."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer":
        return verify(value) if value else None
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(value).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return verify(password) if user == GOOGLE_USER and password else None


def registry_gate(upstream: str, verify: Callable[[str], str | None], seen: list[str]) -> Starlette:
    """The gate's ASGI app; `seen` records the member of each authenticated request (tests read it)."""
    upstream = upstream.rstrip("/")

    async def forward(request: Request) -> Response:
        member = caller_of(request.headers.get("authorization", ""), verify)
        if member is None:
            return JSONResponse({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required",
                                             "detail": None}]}, status_code=401,
                                headers={"WWW-Authenticate": 'Basic realm="Artifact Registry (sandbox)"',
                                         "Docker-Distribution-API-Version": "registry/2.0"})
        seen.append(member)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        headers["host"] = request.headers.get("host", "")  # the registry builds upload URLs from it: the gate's
        url = f"{upstream}{request.url.path}" + (f"?{request.url.query}" if request.url.query else "")
        async with httpx.AsyncClient(timeout=120, trust_env=False) as client:
            answer = await client.request(request.method, url, headers=headers, content=await request.body())
        out = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP | {"content-encoding"}}
        if "location" in out:
            out["location"] = out["location"].replace(upstream, f"http://{request.headers.get('host', '')}")
        return Response(answer.content, status_code=answer.status_code, headers=out)

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
    return Starlette(routes=[Route("/{path:path}", forward, methods=methods)])
