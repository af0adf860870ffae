"""The live stage display of `stagecheck validate`: a line when a stage ends, the stages still running, a
table per service at the end.

On a terminal it is drawn with `rich` (a live view of the running stages, coloured statuses, tables);
for pipes and CI logs (not a terminal, or NO_COLOR / CI set) it writes the plain lines, no escape codes.
Every text passes through `redact` first (summaries can quote log lines)."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

from stagecheck.model import ServiceReport, StageResult, Status
from stagecheck.redact import redact
from stagecheck.report import merge_not_run

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live

MARK = {Status.PASS: "PASS", Status.WARN: "WARN", Status.FAIL: "FAIL", Status.SKIP: "SKIP"}
STYLE = {Status.PASS: "green", Status.WARN: "yellow", Status.FAIL: "bold red", Status.SKIP: "bright_black"}


def use_rich(out: TextIO, environ: Mapping[str, str] = os.environ) -> bool:
    """Draw with rich only on a terminal, and not when NO_COLOR or CI asks for plain output."""
    return out.isatty() and not environ.get("NO_COLOR") and not environ.get("CI")


def _clip(text: str, limit: int) -> str:
    return text if len(text) < limit else text[: limit - 3] + "..."


class LiveDisplay:
    """Implements `stagecheck.progress.Progress`. Use as a context manager around the run (the live view
    of running stages is shown inside it), then `print_summary()`."""

    def __init__(self, out: TextIO | None = None, *, console: Console | None = None,
                 environ: Mapping[str, str] = os.environ) -> None:
        self.out = out if out is not None else sys.stdout
        self.started: dict[tuple[str, str], float] = {}
        self.reports: list[tuple[ServiceReport, Path]] = []
        self._lock = threading.Lock()
        self._live: Live | None = None
        self.console: Console | None = console
        if self.console is None and use_rich(self.out, environ):
            from rich.console import Console

            self.console = Console(file=self.out, highlight=False)

    @property
    def rich(self) -> bool:
        return self.console is not None

    # -- the run
    def __enter__(self) -> LiveDisplay:
        if self.console is not None:
            from rich.live import Live

            self._live = Live(self, console=self.console, refresh_per_second=4, transient=True)
            self._live.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def stage_started(self, service: str, stage: str) -> None:
        with self._lock:
            self.started[(service, stage)] = time.monotonic()
        if self.console is None:
            self._line(f"  .. {service:<20} {stage:<16} running")

    def stage_finished(self, service: str, result: StageResult) -> None:
        with self._lock:  # the live view shows it no more (a stage may be recorded under another name)
            for key in [k for k in self.started if k[0] == service]:
                del self.started[key]
        if self.console is None:
            self._line(f"  {MARK[result.status]} {service:<20} {result.name:<16} "
                       f"{result.duration_s:6.1f}s  {_clip(result.summary, 110)}")
            return
        from rich.text import Text

        line = Text("  ")
        line.append(MARK[result.status], style=STYLE[result.status])
        line.append(redact(f" {service:<20} {result.name:<16} {result.duration_s:6.1f}s  {_clip(result.summary, 110)}"))
        self.console.print(line, soft_wrap=True)

    def service_finished(self, report: ServiceReport, path: Path) -> None:
        self.reports.append((report, path))

    def __rich__(self) -> RenderableType:
        """The live view: the stages running now, with their elapsed time."""
        from rich.spinner import Spinner
        from rich.table import Table

        now = time.monotonic()
        with self._lock:
            running = sorted(self.started.items(), key=lambda kv: kv[1])
        grid = Table.grid(padding=(0, 1))
        for (service, stage), since in running:
            grid.add_row(Spinner("dots"), redact(service), redact(stage), f"{now - since:5.1f}s")
        return grid

    def _line(self, text: str) -> None:
        # write, not print: inside a flow run Prefect may capture print() into its logs
        self.out.write(redact(text) + "\n")
        self.out.flush()

    # -- the end
    def table(self) -> str:
        """The plain summary: per service its verdict, a row per stage, rollback, reasons, warnings, report."""
        lines = []
        for report, path in self.reports:
            head = f"{report.service}: {report.verdict.value.upper()}"
            if report.decided_by:
                head += f" (gate: {report.decided_by})"
            lines += ["", head, f"  {'stage':<16} {'status':<6} {'time':>7}  summary"]
            for stage in report.stages:
                lines.append(f"  {stage.name:<16} {MARK[stage.status]:<6} "
                             f"{stage.duration_s:6.1f}s  {_clip(stage.summary, 90)}")
            lines += [f"  {line}" for line in _footer(report, path)]
        return "\n".join(lines)

    def print_summary(self) -> None:
        """The summary table of every service, drawn with rich on a terminal, plain otherwise."""
        if self.console is None:
            self.out.write(redact(self.table()) + "\n")
            self.out.flush()
            return
        from rich.table import Table
        from rich.text import Text

        for report, path in self.reports:
            verdict = Status.PASS if report.verdict.value == "pass" else Status.FAIL
            title = Text(redact(f"{report.service}: "))
            title.append(report.verdict.value.upper(), style=STYLE[verdict])
            if report.decided_by:
                title.append(redact(f" (gate: {report.decided_by})"))
            table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
            table.add_column("stage")
            table.add_column("status")
            table.add_column("time", justify="right")
            table.add_column("summary", overflow="fold")
            for stage in report.stages:
                table.add_row(Text(redact(stage.name)), Text(MARK[stage.status], style=STYLE[stage.status]),
                              f"{stage.duration_s:.1f}s", Text(redact(_clip(stage.summary, 200))))
            self.console.print()
            self.console.print(table)
            for line in _footer(report, path):
                self.console.print(Text(redact(f"  {line}")), soft_wrap=True)


def _footer(report: ServiceReport, path: Path) -> list[str]:
    lines = []
    if report.rollback.needed or report.rollback.message:
        lines.append(f"rollback: {report.rollback.message}")
    lines += [f"reason: {reason}" for reason in merge_not_run(report.reasons)]
    lines += [f"warning: {warning}" for warning in report.warnings]
    lines.append(f"report: {path}")
    return lines
