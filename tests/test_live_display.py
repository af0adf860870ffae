"""The live stage display: rich on a terminal, plain lines (no escape codes) for pipes, CI and NO_COLOR."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from cli.commands.display import LiveDisplay, use_rich
from stagecheck.model import Rollback, ServiceReport, StageResult, Status, Verdict
from stagecheck.redact import MASK

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
LEAK = "DB_PASSWORD=hunter22"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _report() -> ServiceReport:
    stages = [StageResult(name="deploy", status=Status.PASS, summary="revision shop-00002-abc Ready", duration_s=4.2),
              StageResult(name="logs", status=Status.FAIL, summary=f"new crash: traceback: [bold]{LEAK}",
                          duration_s=1.5)]
    return ServiceReport(service="shop", project="p", region="europe-west1", verdict=Verdict.FAIL,
                         decided_by="logs", reasons=["logs: new crash"], stages=stages, started_at=T0,
                         finished_at=T0, rollback=Rollback(needed=True, performed=True, ok=True,
                                                           message="traffic restored to shop-00001-xyz"))


def _run(display: LiveDisplay) -> None:
    with display:
        display.stage_started("shop", "deploy")
        display.stage_finished("shop", _report().stages[0])
        display.stage_started("shop", "logs")
        display.stage_finished("shop", _report().stages[1])
        display.service_finished(_report(), Path("reports/shop.md"))
    display.print_summary()


def test_a_pipe_gets_plain_lines_and_a_plain_table() -> None:
    out = io.StringIO()
    display = LiveDisplay(out, environ={})
    assert not display.rich
    _run(display)
    text = out.getvalue()
    assert "\x1b" not in text
    lines = text.splitlines()
    assert lines[0] == "  .. shop                 deploy           running"
    assert lines[1] == "  PASS shop                 deploy              4.2s  revision shop-00002-abc Ready"
    assert "shop: FAIL (gate: logs)" in lines
    assert "  logs             FAIL      1.5s  new crash: traceback: [bold]DB_PASSWORD=[REDACTED]" in lines
    assert "  rollback: traffic restored to shop-00001-xyz" in lines
    assert lines[-1] == "  report: reports/shop.md"
    assert "hunter22" not in text


def test_no_color_or_ci_keep_a_terminal_plain() -> None:
    assert use_rich(Terminal(), {}) is True
    assert use_rich(Terminal(), {"NO_COLOR": "1"}) is False
    assert use_rich(Terminal(), {"CI": "true"}) is False
    assert use_rich(io.StringIO(), {}) is False
    out = Terminal()
    _run(LiveDisplay(out, environ={"CI": "true"}))
    assert "\x1b" not in out.getvalue() and "shop: FAIL (gate: logs)" in out.getvalue()


def test_a_terminal_gets_colours_a_live_view_and_a_table() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system="standard", width=160)
    display = LiveDisplay(console=console)
    assert display.rich
    display.stage_started("shop", "probe 50%")
    view = Console(file=io.StringIO(), force_terminal=True, width=100)
    view.print(display)
    assert "shop" in view.file.getvalue() and "probe 50%" in view.file.getvalue()  # type: ignore[attr-defined]
    display.stage_finished("shop", _report().stages[0])
    view = Console(file=io.StringIO(), width=100)
    view.print(display)
    assert "probe 50%" not in view.file.getvalue()  # type: ignore[attr-defined]

    _run(display)
    text = out.getvalue()
    assert "\x1b[" in text  # coloured
    assert "\x1b[1;31mFAIL" in text  # the failed stage in bold red
    assert "hunter22" not in text and MASK in text  # markup-like text printed as it is, redacted
    assert "[bold]" in text
    assert "report: reports/shop.md" in text
    for cell in ("stage", "status", "summary", "deploy", "logs", "4.2s", "shop: "):
        assert cell in text
