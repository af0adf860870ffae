"""Cloud Run style log entries for one sandbox (project + region) written to the LogStore."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sandbox.logstore import LogStore, container_entry, request_entry, system_entry


@dataclass
class RunLog:
    store: LogStore
    project: str
    location: str

    def system(self, service: str, revision: str | None, severity: str, message: str) -> None:
        self.store.append(system_entry(project=self.project, location=self.location, service=service,
                                       revision=revision, severity=severity, message=message))

    def container(self, service: str, revision: str, stream: Literal["stdout", "stderr"], line: str,
                  instance_id: str | None = None) -> None:
        self.store.append(container_entry(project=self.project, location=self.location, service=service,
                                          revision=revision, stream=stream, line=line, instance_id=instance_id))

    def request(
        self,
        service: str,
        revision: str,
        *,
        method: str,
        url: str,
        status: int,
        latency_s: float,
        user_agent: str | None,
        request_size: int | None,
        response_size: int | None,
        instance_id: str | None = None,
    ) -> None:
        self.store.append(request_entry(project=self.project, location=self.location, service=service,
                                        revision=revision, method=method, url=url, status=status,
                                        latency_s=latency_s, user_agent=user_agent,
                                        request_size=request_size, response_size=response_size,
                                        instance_id=instance_id))
