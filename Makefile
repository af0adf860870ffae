# stagecheck developer and CI entry points. Every target sets up what it needs from a fresh clone
# (Debian machine, root): `make setup` installs the system packages and the virtualenv.
#
#   make setup      venv in .venv (+ docker.io, docker-registry, busybox-static, postgresql, debootstrap via apt)
#   make up         Docker Engine + registry (stagecheck infra up), then the sandbox
#   make down       stop the sandbox, then only what `make up` started (by pid)
#   make serve      local Prefect server + deployments + worker (UI on http://127.0.0.1:4200); make down stops them
#   make test       lint + typecheck + pytest (starts the engine/registry first)
#   make lint | typecheck | pytest   (lint = ruff + the import contracts in pyproject [tool.importlinter])
#   make demo       set up, start the sandbox, validate the example service end to end
#   make clean-registry   untag what test sessions left in the local registry (older than an hour)
#   make docs       docs/configuration.md from the settings model; the sample report + its UI picture (needs chromium)
#   make bench      the benchmarks (scripts printing figures; docs/performance.md); BENCH=syntax_cache runs one

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
STATE_DIR ?= $(CURDIR)/.stagecheck
# The suite waits far more than it computes (probes, holds, bakes, cold starts): it runs in parallel
# processes (pytest-xdist), each with its own sandbox and temporary Prefect server; the tests on one
# real `prefect server` stay together on one worker (xdist_group, tests/server/conftest.py).
# PYTEST_WORKERS=0 runs everything in this process.
PYTEST_WORKERS ?= 3
PYTEST_ARGS ?= -ra -n $(PYTEST_WORKERS) --dist loadgroup
BIN := $(VENV)/bin
STAGECHECK := $(BIN)/stagecheck
SETUP_STAMP := $(VENV)/.setup-stamp
APT_PACKAGES := docker.io docker-registry busybox-static postgresql debootstrap
PY_PACKAGES := cli localenv stagecheck flows tasks deployments sandbox examples tests benchmarks tools
# mypy refuses a directory without Python files: check only the packages that have some.
MYPY_TARGETS = $(foreach d,$(PY_PACKAGES),$(if $(shell find $(d) -name '*.py' -print -quit 2>/dev/null),$(d)))

export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_NO_INPUT := 1

.PHONY: help setup system-packages up down infra-up test lint typecheck pytest demo serve clean-registry bench docs

help:
	@sed -n '/^#/!q; s/^# \{0,1\}//p' Makefile

setup: system-packages $(SETUP_STAMP)

# dockerd, docker-registry, a *static* busybox (the sample image is FROM scratch) and PostgreSQL (the team
# server's database in tests/server/test_team_server.py; the tests start a cluster of their own) and debootstrap
# (the worker image's base in tests/server/test_docker_worker.py: no image registry is reachable).
system-packages:
	@missing=""; \
	command -v dockerd >/dev/null || missing="$$missing dockerd"; \
	command -v docker-registry >/dev/null || missing="$$missing docker-registry"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v debootstrap >/dev/null || missing="$$missing debootstrap"; \
	if command -v dpkg-query >/dev/null; then \
	  dpkg-query -W -f='$${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || missing="$$missing busybox-static"; \
	else \
	  test -x /usr/bin/busybox || missing="$$missing busybox"; \
	fi; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ -f /etc/debian_version ] && [ "$$(id -u)" = 0 ]; then \
	  echo "installing system packages (missing:$$missing)"; \
	  apt-get update -q; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(APT_PACKAGES); \
	else \
	  echo "missing:$$missing; install the Debian packages $(APT_PACKAGES) (as root)" >&2; exit 1; \
	fi

$(SETUP_STAMP): pyproject.toml
	@if ! $(PYTHON) -c 'import venv, ensurepip' 2>/dev/null && [ -f /etc/debian_version ] && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv; \
	fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

infra-up: setup
	$(STAGECHECK) infra up --state-dir $(STATE_DIR)

up: infra-up
	$(STAGECHECK) sandbox up --state-dir $(STATE_DIR)

# Prefect server (SQLite under $(STATE_DIR)/prefect), work pool, concurrency limits, the deployments of
# prefect.yaml (their default parameters pointed at the local sandbox and the example), worker.
SERVE_PARAMS ?= --param sandbox=true --param config=examples/stagecheck.sandbox.toml --param state_dir=$(STATE_DIR)
serve: up
	$(STAGECHECK) serve up --state-dir $(STATE_DIR) $(SERVE_PARAMS)

# Stops only what `make up` / `make serve` / the tests started (recorded by pid); never fails on a fresh clone.
down:
	@if [ ! -x $(STAGECHECK) ]; then echo "nothing to stop (no $(VENV))"; exit 0; fi; \
	$(STAGECHECK) serve down --state-dir $(STATE_DIR) || echo "warning: serve down failed" >&2; \
	$(STAGECHECK) sandbox down --state-dir $(STATE_DIR) || echo "warning: sandbox down failed" >&2; \
	$(STAGECHECK) infra down --state-dir $(STATE_DIR)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: setup
	$(BIN)/mypy $(MYPY_TARGETS)

pytest: infra-up
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# The README's first command: set up, bring the sandbox up, validate the example service end to end.
demo: up
	$(STAGECHECK) validate --config examples/stagecheck.sandbox.toml --sandbox --state-dir $(STATE_DIR)

# Session tags (test-/bench-/soak-<hex>) of the sample image and the tests' one-off repositories not pushed to
# for an hour; the running sessions' own tags stay (each session also removes its own at the end).
clean-registry: setup
	$(BIN)/python -m localenv.cleanup --state-dir $(STATE_DIR) --older-than 3600

# Each benchmark prints its figures (and the command line that reproduces them); none is a test.
# The sandbox-backed ones start their own sandbox / Prefect server on the engine + registry of STATE_DIR.
BENCHES ?= syntax_cache readiness verdict logs log_coalesce syntax prober logstore team_server
bench: infra-up
	@for b in $(if $(BENCH),$(BENCH),$(BENCHES)); do \
	  echo "== benchmarks/bench_$$b.py"; \
	  STAGECHECK_STATE_DIR=$(STATE_DIR) $(BIN)/python benchmarks/bench_$$b.py; \
	done

# docs/configuration.md (generated; a test fails when it is stale) and the sample report with its picture
docs: infra-up
	$(BIN)/python -m tools.gen_config_doc
	$(BIN)/python -m tools.refresh_docs --state-dir $(STATE_DIR)
