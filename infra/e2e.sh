#!/usr/bin/env bash
# `make e2e`: the compose stack end to end on this machine, then torn down without a trace.
#
# 1. a Docker engine (installed and started if needed), 2. `make up` (with OFFLINE=1, the default
# here, since CI must stay on loopback: local stand-in images, which make up builds, and host
# networking on 127.0.0.1), 3. the checks in tests/stack (registry, runs, artifacts in S3,
# predictions, Prometheus targets, Grafana, every listening socket on loopback, no secret in any
# process's arguments, persistence across `make down` / `make up`), 4. teardown: containers,
# network and volumes of this throwaway project. It runs as its own compose project with its own
# settings, so a stack you run yourself keeps its data; it refuses to start while that stack holds
# the ports. OFFLINE=0 runs it on registry images instead.
set -euo pipefail
cd "$(dirname "$0")/.."

export OFFLINE="${OFFLINE:-1}"
export COMPOSE_PROJECT_NAME=mlops-e2e
workdir="$(mktemp -d /tmp/mlops-e2e.XXXXXX)"
export MLOPS_ENV_FILE="$workdir/e2e.env" COMPOSE_ENV_FILES="$workdir/e2e.env"
if [ "$OFFLINE" = 1 ]; then
  export COMPOSE_FILE=docker-compose.yml:infra/offline/compose.loopback.yml
fi

say() { printf 'e2e: %s\n' "$*"; }

teardown() {
  local code=$?
  if [ "$code" -ne 0 ]; then
    say "FAILED (exit $code): state and logs follow"
    docker compose ps --all || true
    docker compose logs --no-color --tail 60 || true
    # Last, so a log cut to its tail (CI keeps the end) still says which check failed and why.
    if [ -s "$workdir/checks.log" ]; then
      say "failed checks:"
      sed -n '/short test summary info/,$p' "$workdir/checks.log"
    fi
    say "FAILED (exit $code) during: $stage"
  fi
  say "tearing down project $COMPOSE_PROJECT_NAME"
  docker compose down --volumes --remove-orphans --timeout 30 >/dev/null 2>&1 || true
  # Trainer containers the orchestrator started (not compose services) if one was still running.
  docker ps -aq --filter label=org.mlops.role=retraining | xargs -r docker rm -f >/dev/null 2>&1 || true
  rm -rf "$workdir"
  left="$(docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")"
  nets="$(docker network ls -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")"
  if [ -n "$left$nets" ]; then
    say "ERROR: containers or networks left behind: $left $nets"
    code=1
  fi
  exit "$code"
}
stage="setup"
trap teardown EXIT

say "Docker engine"
infra/install-docker.sh

python3 infra/stack.py env >/dev/null
# The closed loop's watch after a promotion: a minute here instead of five (docs/closed-loop.md).
sed -i 's/^WATCH_S=.*/WATCH_S=60/' "$MLOPS_ENV_FILE"
export CLOSED_LOOP_TIMINGS="${CLOSED_LOOP_TIMINGS:-/tmp/mlops-e2e-closed-loop.json}"
export FAULT_TIMINGS="${FAULT_TIMINGS:-/tmp/mlops-e2e-faults.json}"
rm -f "$FAULT_TIMINGS"
started=$SECONDS
say "make up"
stage="make up"
make --no-print-directory up
say "up and healthy in $((SECONDS - started)) s"

say "checks"
stage="the checks in tests/stack"
# Its own --basetemp: pytest resets /tmp/pytest-of-$USER to 0700 at start, which would cut off the
# PostgreSQL clusters of a `make test` running beside it (they run as the postgres user).
.venv/bin/python -m pytest -p no:cacheprovider --basetemp "$workdir/pytest" tests/stack -v -rfE --durations=30 2>&1 | tee "$workdir/checks.log"
say "passed in $((SECONDS - started)) s"
if [ -f "$CLOSED_LOOP_TIMINGS" ]; then
  say "closed loop timings (s): $(tr -d '\n ' < "$CLOSED_LOOP_TIMINGS")"
fi
if [ -f "$FAULT_TIMINGS" ]; then
  say "faults (s): $(tr -d '\n ' < "$FAULT_TIMINGS")"
fi
