#!/usr/bin/env bash
# Check that compose.loopback.yml keeps the whole stack on loopback: in the merged configuration
# (docker-compose.yml + compose.loopback.yml, all profiles) every service uses the host's network,
# publishes no port, and resolves every compose service name to 127.0.0.1; services compose builds
# build with the host's network.
#
# Why: a service added to docker-compose.yml but not to the override would silently land on a
# bridge network and miss its peers. Run it in tests and after editing either file.
# Uses .env when present, otherwise dummy values (same as build-images.sh). Exit 0 when all is well.
set -euo pipefail

# shellcheck source=infra/offline/build-images.sh
source "$(dirname "${BASH_SOURCE[0]}")/build-images.sh"

merged="$(compose_cmd -f "$REPO/docker-compose.yml" -f "$HERE/compose.loopback.yml" --profile '*' \
    config --format json)" || fail "docker compose config failed for docker-compose.yml + compose.loopback.yml"

printf '%s\n' "$merged" | python3 "$HERE/check_loopback.py"
