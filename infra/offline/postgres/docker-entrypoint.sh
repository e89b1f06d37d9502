#!/usr/bin/env bash
# Entrypoint of the offline postgres stand-in (see Dockerfile): the official image's contract,
# written for Debian's postgresql-15.
#   - as root: fix ownership of PGDATA and the socket directory, then re-run itself as postgres
#   - first start (no PGDATA/PG_VERSION): initdb with the superuser POSTGRES_USER and its password,
#     password auth (POSTGRES_HOST_AUTH_METHOD, default scram-sha-256) for every TCP connection,
#     listen on all addresses, create POSTGRES_DB, run /docker-entrypoint-initdb.d/* on a
#     temporary socket-only server (so health checks fail until the real server runs)
#   - every start: exec the server as PID 1 (SIGINT/SIGTERM shut it down cleanly)
set -Eeo pipefail  # no -u: sourced initdb.d scripts may read unset variables

log() { printf '%s [entrypoint] %s\n' "$(date -u +'%Y-%m-%d %H:%M:%S UTC')" "$*"; }
die() { log "ERROR: $*" >&2; exit 1; }

# `docker run image -c foo=bar` means `postgres -c foo=bar`, as in the official image.
if [ "${1:0:1}" = '-' ]; then
    set -- postgres "$@"
fi

if [ "$1" != 'postgres' ]; then
    exec "$@"
fi

: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA

if [ "$(id -u)" = '0' ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chmod 0700 "$PGDATA"
    find "$PGDATA" /var/run/postgresql \! -user postgres -exec chown postgres:postgres '{}' +
    exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [ -s "$PGDATA/PG_VERSION" ]; then
    log "stand-in for postgres:15.14-bookworm (Debian $(postgres --version)); existing data in $PGDATA, skipping initialisation"
    exec "$@"
fi

log "stand-in for postgres:15.14-bookworm (Debian $(postgres --version)); initialising $PGDATA"
POSTGRES_USER="${POSTGRES_USER:-postgres}"
POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"
POSTGRES_HOST_AUTH_METHOD="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != 'trust' ]; then
    die "database is uninitialized and superuser password is not specified: set POSTGRES_PASSWORD (or POSTGRES_HOST_AUTH_METHOD=trust, not recommended)"
fi

# initdb: local (socket) connections trusted, every TCP connection (loopback included) needs the
# password. Stricter than the official image, which also trusts 127.0.0.1: with host networking
# every client arrives on loopback, and clients must prove they know the password.
pwfile="$(mktemp)"
printf '%s\n' "${POSTGRES_PASSWORD:-}" > "$pwfile"
# shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a list of words, as in the official image
initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --encoding=UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host="$POSTGRES_HOST_AUTH_METHOD" ${POSTGRES_INITDB_ARGS:-} >/dev/null
rm -f "$pwfile"
printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >> "$PGDATA/pg_hba.conf"
printf "\nlisten_addresses = '*'\n" >> "$PGDATA/postgresql.conf"

# Temporary server: no TCP, socket in a private directory that health checks do not look at.
init_socket_dir="$(mktemp -d)"
export PGHOST="$init_socket_dir"
pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -c unix_socket_directories='$init_socket_dir'" start >/dev/null

psql_run() { psql -v ON_ERROR_STOP=1 --no-password --no-psqlrc --username "$POSTGRES_USER" "$@"; }

if [ "$POSTGRES_DB" != 'postgres' ]; then
    exists="$(psql_run --dbname postgres -tA -v db="$POSTGRES_DB" <<< "SELECT 1 FROM pg_database WHERE datname = :'db';")"
    if [ -z "$exists" ]; then
        psql_run --dbname postgres -q -v db="$POSTGRES_DB" <<< 'CREATE DATABASE :"db";'
        log "created database $POSTGRES_DB"
    fi
fi

shopt -s nullglob
for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
        *.sh)
            if [ -x "$f" ]; then log "running $f"; "$f"
            else log "sourcing $f"; # shellcheck disable=SC1090
                 . "$f"; fi ;;
        *.sql)    log "running $f"; psql_run --dbname "$POSTGRES_DB" -f "$f" >/dev/null ;;
        *.sql.gz) log "running $f"; gunzip -c "$f" | psql_run --dbname "$POSTGRES_DB" >/dev/null ;;
        *)        log "ignoring $f" ;;
    esac
done
shopt -u nullglob

pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
unset PGHOST
rmdir "$init_socket_dir"
log "initialisation complete; starting the server"
exec "$@"
