# The stagecheck worker image: what a flow run needs in a Docker, Kubernetes or Cloud Run work pool.
# stagecheck and its runtime dependencies, and git (the per-run checkout); no sandbox or dev dependency.
#
#   docker build -t stagecheck-worker .                                  # python:3.12-slim, from PyPI
#   docker build --build-arg BASE=my-registry/python:3.12 -t stagecheck-worker .
#
# BASE must have Python >= 3.11 with venv (and git, or apt-get to install it). Offline builds: put the
# wheels of stagecheck's dependencies in wheels/ (`pip download -d wheels .`) and pip
# installs from there only. The build stage of a flow run needs a Docker Engine: mount its socket (or set
# DOCKER_HOST / `docker_host` in the config to a remote one); the README's "Worker image and work pools".
ARG BASE=python:3.12-slim
FROM ${BASE}

RUN command -v git >/dev/null || { apt-get update && apt-get install -y --no-install-recommends git ca-certificates \
    && rm -rf /var/lib/apt/lists/*; }

COPY wheels/ /tmp/wheels/
COPY pyproject.toml README.md /opt/stagecheck/
COPY stagecheck/ /opt/stagecheck/stagecheck/
COPY flows/ /opt/stagecheck/flows/
COPY tasks/ /opt/stagecheck/tasks/
COPY deployments/ /opt/stagecheck/deployments/
COPY cli/ /opt/stagecheck/cli/
COPY localenv/ /opt/stagecheck/localenv/
COPY prefect.yaml /opt/stagecheck/

RUN python3 -m venv /opt/venv \
    && if ls /tmp/wheels/*.whl >/dev/null 2>&1; then FROM_WHEELS="--no-index --find-links /tmp/wheels"; fi \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check $FROM_WHEELS /opt/stagecheck \
    && rm -rf /tmp/wheels

ENV PATH=/opt/venv/bin:$PATH \
    DO_NOT_TRACK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false
WORKDIR /opt/stagecheck
