"""Which processes that wrote a record are gone: pid + start time on this host (stagecheck.liveness)."""

from __future__ import annotations

import subprocess
import sys

from stagecheck.liveness import ProcessRef, is_gone, start_ticks, this_process


def test_this_process_runs_and_a_finished_one_is_gone() -> None:
    me = this_process()
    assert me.started is not None and is_gone(me) is False
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        ref = ProcessRef(host=me.host, pid=child.pid, started=start_ticks(child.pid))
        assert ref.started is not None and is_gone(ref) is False
    finally:
        child.kill()
        child.wait()
    assert is_gone(ref) is True


def test_a_reused_pid_is_not_the_writer_and_another_host_cannot_be_judged() -> None:
    me = this_process()
    assert me.started is not None
    assert is_gone(me.model_copy(update={"pid": 1, "started": -1})) is True  # pid 1 runs, but started at another time
    assert is_gone(me.model_copy(update={"host": me.host + "-elsewhere"})) is None
