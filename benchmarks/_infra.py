"""The running Docker Engine + registry a sandbox-backed benchmark uses. Never starts them: a
benchmark measures, it does not set up (run `make up`, or point STAGECHECK_STATE_DIR at a state dir
whose infrastructure runs)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from localenv.infra import InfraInfo, engine_answers, ensure_sample_base, read_infra_json

REPO = Path(__file__).resolve().parent.parent


def running_infra() -> InfraInfo:
    state = Path(os.environ.get("STAGECHECK_STATE_DIR") or REPO / ".stagecheck")
    info = read_infra_json(state)
    if info is None or not engine_answers(info.docker_host):
        sys.exit(f"no running Docker Engine recorded in {state}: run `make up` or set STAGECHECK_STATE_DIR")
    ensure_sample_base(info.docker_host)  # the sample Dockerfile's base image (built once, kept)
    return info
