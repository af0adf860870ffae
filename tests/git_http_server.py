"""A git smart-HTTP server on 127.0.0.1 for the tests: git's own `git http-backend` (CGI) behind a WSGI server in a
thread, answering 401 unless the request carries the expected HTTP Basic credentials. It records every request's
path (never its headers) so a test can check that credentials stay out of URLs."""

from __future__ import annotations

import base64
import subprocess
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class GitHttpServer:
    root: Path  # holds the served repositories (bare or not)
    user: str
    password: str
    paths: list[str] = field(default_factory=list)  # request paths with their query strings
    unauthorised: int = 0
    url: str = ""

    def _app(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        self.paths.append(environ.get("PATH_INFO", "") + "?" + environ.get("QUERY_STRING", ""))
        expected = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        if environ.get("HTTP_AUTHORIZATION") != expected:
            self.unauthorised += 1
            start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="git"'),
                                                ("Content-Type", "text/plain")])
            return [b"authentication required\n"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        cgi_env = {"GIT_PROJECT_ROOT": str(self.root), "GIT_HTTP_EXPORT_ALL": "1", "REMOTE_USER": self.user,
                   "PATH": "/usr/bin:/bin"}
        for key in ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "CONTENT_TYPE", "CONTENT_LENGTH",
                    "HTTP_CONTENT_ENCODING", "HTTP_GIT_PROTOCOL", "REMOTE_ADDR"):
            if environ.get(key):
                cgi_env[key] = str(environ[key])
        proc = subprocess.run(["git", "http-backend"], input=body, capture_output=True, env=cgi_env, check=False)
        head, _, payload = proc.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = proc.stdout.partition(b"\n\n")
        status, headers = "200 OK", []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = value.strip()
            elif name:
                headers.append((name, value.strip()))
        start_response(status, headers)
        return [payload]


@contextmanager
def git_http_server(root: Path, user: str, password: str) -> Iterator[GitHttpServer]:
    """Serve the repositories under `root` at http://127.0.0.1:<port>/<name>; stopped on exit."""
    server = GitHttpServer(root=root, user=user, password=password)
    httpd: WSGIServer = make_server("127.0.0.1", 0, server._app, handler_class=_Quiet)
    server.url = f"http://127.0.0.1:{httpd.server_port}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
