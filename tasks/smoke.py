"""Stage `smoke` (optional): user commands run against the released revision."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from stagecheck.model import Criterion, Evidence, StageResult, Status
from stagecheck.redact import redact
from stagecheck.settings import SmokeCommand
from stagecheck.stages import Stage
from tasks.common import gate, guarded, stage_run_name

TAIL_CHARS = 2000


async def run_command(cmd: SmokeCommand, env: Mapping[str, str], cwd: Path) -> tuple[int | None, str, float]:
    """(exit code or None on timeout, output tail, seconds)."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_shell(
        cmd.command, cwd=str(cwd), env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=cmd.timeout_s)
    except TimeoutError:
        # the command runs in its own session: end its whole process group, not only the shell (a child
        # left running would also hold the output pipe open, and waiting for the shell would wait for it)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        return None, "", time.monotonic() - started
    return proc.returncode, out.decode(errors="replace")[-TAIL_CHARS:], time.monotonic() - started


@task(name="smoke", cache_policy=NO_CACHE, task_run_name=stage_run_name(Stage.SMOKE))
async def run_smoke(commands: Sequence[SmokeCommand], env: dict[str, str], cwd: Path, service: str = "") -> StageResult:
    """Run the configured smoke commands against the released revision (URLs in their env); a non-zero exit fails.
    `service` names the task run (`smoke · <service>`) in the UI."""
    async def body() -> tuple[StageResult, None]:
        if not commands:
            return StageResult(name=Stage.SMOKE, status=Status.SKIP, summary="no smoke commands configured"), None
        results = await asyncio.gather(*(run_command(c, env, cwd) for c in commands))
        evidence, criteria = [], []
        for cmd, (code, tail, seconds) in zip(commands, results, strict=True):
            ok = code == 0
            observed = (f"timed out: no exit within {cmd.timeout_s:g} s (killed with its process group)"
                        if code is None else f"exit {code} in {seconds:.1f}s")
            evidence.append(Evidence(kind="command", summary=f"{cmd.name}: {observed}",
                                     data={"command": redact(cmd.command), "exit_code": code, "output_tail": redact(tail)}))
            criteria.append(Criterion(name=f"Smoke: {cmd.name}", stage=Stage.SMOKE, status=Status.PASS if ok else Status.FAIL,
                                      expected="exit 0", observed=observed))
        failed = [c.name for c, (code, _, _) in zip(commands, results, strict=True) if code != 0]
        status = Status.FAIL if failed else Status.PASS
        summary = f"failed: {', '.join(failed)}" if failed else f"{len(commands)} command(s) passed"
        return StageResult(name=Stage.SMOKE, status=status, summary=summary, evidence=evidence, criteria=criteria), None

    result, _ = await guarded(Stage.SMOKE, body, None)
    return gate(result, result)
