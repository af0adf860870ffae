"""Cloud Run style log entries for one sandbox (project + region) written to the LogStore."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sandbox.logstore import LogStore, audit_entry, container_entry, request_entry, system_entry


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

    def ready_changed(self, service: str, revision: str | None, ready: bool, detail: str | None = None) -> None:
        """The system_event audit entry of a Ready condition change (revision, or service when None)."""
        what = f"Revision {revision}" if revision else f"Service {service}"
        message = f"Ready condition status changed to {ready} for {what}" + (
            f" with message: {detail}" if detail else ".")
        self.store.append(audit_entry(project=self.project, location=self.location, service=service,
                                      revision=revision, ready=ready, message=message))

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
        timestamp: datetime | None = None,
        text: str | None = None,
    ) -> None:
        """A request entry, written when the response is done but stamped with `timestamp`, the arrival
        (Cloud Run's request entries: `timestamp` when the request came, `receiveTimestamp` later)."""
        self.store.append(request_entry(project=self.project, location=self.location, service=service,
                                        revision=revision, method=method, url=url, status=status,
                                        latency_s=latency_s, user_agent=user_agent,
                                        request_size=request_size, response_size=response_size,
                                        instance_id=instance_id, timestamp=timestamp, text=text))
