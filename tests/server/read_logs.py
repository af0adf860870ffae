"""A separate process that reads one revision's logs N times through LogReader (as a flow run on another
worker would), for tests/server/test_log_read_budget.py:

    python -m tests.server.read_logs ENDPOINT CREDENTIALS_FILE PROJECT READS GO_FILE

It prints `ready` once its reader exists, waits for GO_FILE (so that the processes read at the same time),
then prints one JSON line: the time.monotonic() at which it began reading and at which each read returned. PREFECT_API_URL comes from
the environment (without it the reader paces itself with its in-process budget)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from stagecheck.clients.cloudlogging import LogReader
from stagecheck.settings import Endpoints, LogRules, ServiceConfig, Settings


def main(endpoint: str, credentials_file: str, project: str, reads: int, go: Path) -> int:
    settings = Settings(project=project, region="europe-west1", registry="127.0.0.1:5000/x",
                        services=(ServiceConfig(name="shop"),), logs=LogRules(reads_per_minute=60),
                        endpoints=Endpoints(logging_api=endpoint, credentials_file=credentials_file))
    reader = LogReader(settings)
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.01)

    began = time.monotonic()

    async def read_all() -> list[float]:
        done = []
        for _ in range(reads):
            await reader.read_revision(service="shop", revision="shop-00001-aaa",
                                       start=datetime.now(UTC) - timedelta(minutes=5))
            done.append(time.monotonic())
        return done

    done = asyncio.run(read_all())
    print(json.dumps({"began": began, "done": done, "server": reader.server_budget is not None}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), Path(sys.argv[5])))
