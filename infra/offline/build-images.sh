#!/usr/bin/env bash
# Build, on this machine, every third-party image the stack names, under exactly the names
# docker-compose.yml and our Dockerfiles use (`make offline-images` calls this script).
#
# Why: the project's machines and CI reach Debian's packages and the Python package index, but no
# container registry, so `docker pull` fails. Each image here is a stand-in built only from
# debootstrap (Debian bookworm minbase), Debian packages and wheels the host downloads.
# What each stand-in does and does not prove: infra/offline/README.md.
#
# Steps: check that the stand-ins cover every image compose and our Dockerfiles name; make the
# Debian base image (rootfs tarball cached); download the wheelhouses (only when their lock file
# changed); build each image. An image whose build inputs did not change is skipped (its inputs
# hash is stored in the label org.mlops.offline.inputs), so a re-run takes seconds.
#
# Settings (environment, all optional):
#   OFFLINE_CACHE_DIR   cache for the rootfs tarball, wheelhouses, build contexts and logs
#                       (default /var/cache/mlops-offline)
#   OFFLINE_FORCE=1     rebuild everything (new rootfs, new wheelhouses, docker build --no-cache)
#   DEBIAN_MIRROR       Debian mirror for debootstrap and apt (default http://deb.debian.org/debian)
#   DEBIAN_SECURITY_MIRROR  security mirror for apt (default http://deb.debian.org/debian-security)
#   HOST_PYTHON         Python 3.11 with pip on the host, used to build wheelhouses (default python3)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${OFFLINE_CACHE_DIR:-/var/cache/mlops-offline}"
FORCE="${OFFLINE_FORCE:-0}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DEBIAN_SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
HOST_PYTHON="${HOST_PYTHON:-python3}"

ROOTFS_IMAGE=mlops-offline/debian:bookworm-rootfs
BASE_IMAGE=mlops-offline/debian:bookworm-minbase
INPUTS_LABEL=org.mlops.offline.inputs
# Build tools baked into the python stand-in's wheelhouse next to requirements.lock, so a
# Dockerfile may also `pip install .` a setuptools-based project offline.
PYTHON_BUILD_TOOLS="setuptools==84.2.1 wheel==0.48.0"
DEFAULT_S3_IMAGE=quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z

# Stand-ins: "image name|folder under infra/offline|wheelhouse lock file ('-' for none)".
STANDINS=(
    "python:3.11.13-slim-bookworm|python|requirements.lock"
    "postgres:15.14-bookworm|postgres|-"
    "prom/prometheus:v2.53.0|prometheus|-"
    "prom/alertmanager:v0.27.0|alertmanager|-"
    "$DEFAULT_S3_IMAGE|minio|infra/offline/minio/requirements.lock"
    "grafana/grafana:11.6.16|grafana|-"
    "gcr.io/cadvisor/cadvisor:v0.49.1|cadvisor|-"
    "tecnativa/docker-socket-proxy:0.4.2|docker-socket-proxy|-"
)

LOGS="$CACHE/logs"
export DOCKER_BUILDKIT=0  # Debian's engine has no buildx plugin; the classic builder is enough.

say() { printf 'build-images: %s\n' "$*"; }
fail() { printf 'build-images: ERROR: %s\n' "$*" >&2; exit 1; }

# run_logged LOG DESCRIPTION CMD...: run CMD with its output in LOG; on failure show the end of
# LOG and stop with one clear line.
run_logged() {
    local log="$1" what="$2"
    shift 2
    if ! "$@" >"$log" 2>&1; then
        tail -n 15 "$log" | sed 's/^/  | /' >&2
        fail "$what failed (full log: $log)"
    fi
}

# hash_inputs PATH_OR_STRING...: one sha256 over the contents of files/directories and strings.
hash_inputs() {
    local item
    for item in "$@"; do
        if [ -d "$item" ]; then
            (cd "$item" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0r sha256sum)
        elif [ -f "$item" ]; then
            sha256sum < "$item"
        else
            printf '%s\n' "$item"
        fi
    done | sha256sum | cut -c1-64
}

image_id() { docker image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }
image_inputs() { docker image inspect --format "{{index .Config.Labels \"$INPUTS_LABEL\"}}" "$1" 2>/dev/null || true; }
image_size_mb() { docker image inspect --format '{{.Size}}' "$1" | awk '{printf "%d MB", $1 / 1000000}'; }

ensure_prerequisites() {
    if ! docker info >/dev/null 2>&1 || ! docker compose version >/dev/null 2>&1; then
        say "docker engine or compose missing: running infra/install-docker.sh"
        "$REPO/infra/install-docker.sh" || fail "infra/install-docker.sh failed"
    fi
    mkdir -p "$CACHE" "$LOGS"
}

# --- 1. coverage: every image compose and our Dockerfiles name has a stand-in -----------------

# compose_cmd ARGS...: `docker compose ARGS` in the repository with its .env ($MLOPS_ENV_FILE when
# set, as under `make e2e`), or when there is no .env, with a throwaway env file: a dummy value for
# every ${VAR:?...} of docker-compose.yml and the documented default S3 image. Also used by
# check-loopback.sh.
compose_cmd() {
    local env_file="${MLOPS_ENV_FILE:-$REPO/.env}" tmp="" rc=0
    if [ ! -f "$env_file" ]; then
        tmp="$(mktemp)"
        grep -o '\${[A-Za-z_][A-Za-z0-9_]*:?' "$REPO/docker-compose.yml" | sed 's/^\${//; s/:?$//' \
            | sort -u | sed 's/$/=offline-check/' > "$tmp"
        printf 'S3_IMAGE=%s\n' "$DEFAULT_S3_IMAGE" >> "$tmp"
        env_file="$tmp"
    fi
    docker compose --project-directory "$REPO" --env-file "$env_file" "$@" || rc=$?
    [ -z "$tmp" ] || rm -f "$tmp"
    return "$rc"
}

# Images named by docker-compose.yml, all profiles.
compose_images() {
    local out
    out="$(compose_cmd -f "$REPO/docker-compose.yml" --profile '*' config --images 2>&1)" \
        || fail "docker compose config --images failed: $(printf '%s' "$out" | tail -n 1)"
    printf '%s\n' "$out"
}

# Base images (FROM) of the Dockerfiles in the repository, stage names and scratch excluded.
dockerfile_images() {
    find "$REPO" \( -path "$REPO/.git" -o -path "$HERE" -o -name node_modules -o -name '.venv*' \) -prune \
        -o -type f \( -name Dockerfile -o -name '*.Dockerfile' -o -name 'Dockerfile.*' \) -print \
        | while read -r dockerfile; do
            awk '
                toupper($1) == "FROM" {
                    i = 2
                    while ($i ~ /^--/) i++
                    image = $i
                    if (toupper($(i + 1)) == "AS") stage[tolower($(i + 2))] = 1
                    if (image == "scratch" || (tolower(image) in stage)) next
                    print image
                }' "$dockerfile"
        done
}

check_coverage() {
    local provided required missing entry
    provided="$(for entry in "${STANDINS[@]}"; do printf '%s\n' "${entry%%|*}"; done | sort -u)"
    required="$({ compose_images; dockerfile_images; } | grep -v -E '^(mlops/|mlops-)' | sort -u)"
    if grep -q '\$' <<< "$required"; then
        fail "an image name uses a build argument, cannot check it: $(grep '\$' <<< "$required" | head -n 1)"
    fi
    missing="$(comm -23 <(printf '%s\n' "$required") <(printf '%s\n' "$provided") | sed '/^$/d')"
    if [ -n "$missing" ]; then
        fail "no offline stand-in for: $(echo $missing) (named by docker-compose.yml/.env or a Dockerfile; add one in infra/offline/)"
    fi
    say "coverage: $(printf '%s\n' "$required" | sed '/^$/d' | wc -l) third-party images named by compose and Dockerfiles, all have a stand-in"
}

# --- 2. base image: debootstrap minbase rootfs (cached tarball), imported, then base/Dockerfile --

build_rootfs_image() {
    local tarball="$CACHE/rootfs/bookworm-minbase.tar" started=$SECONDS
    if [ "$FORCE" = 1 ]; then rm -f "$tarball"; fi
    if [ ! -s "$tarball" ]; then
        command -v debootstrap >/dev/null 2>&1 || {
            say "rootfs: installing debootstrap"
            run_logged "$LOGS/apt-debootstrap.log" "apt-get install debootstrap" \
                bash -c 'export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq debootstrap'
        }
        local dir="$CACHE/rootfs/bookworm-minbase.tmp"
        rm -rf "$dir" && mkdir -p "$dir"
        say "rootfs: debootstrap --variant=minbase bookworm (about 30 s)"
        run_logged "$LOGS/debootstrap.log" "debootstrap" \
            debootstrap --variant=minbase bookworm "$dir" "$DEBIAN_MIRROR"
        run_logged "$LOGS/rootfs-tar.log" "packing the rootfs" \
            tar --numeric-owner -C "$dir" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
                --exclude='./usr/share/man/*' --exclude='./usr/share/info/*' --exclude='./usr/share/locale/*' \
                --exclude='./var/cache/apt/archives/*.deb' --exclude='./var/lib/apt/lists/*' \
                -cf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"
        rm -rf "$dir"
    fi
    local want
    want="$(hash_inputs "$tarball")"
    if [ "$(image_inputs "$ROOTFS_IMAGE")" = "$want" ]; then
        say "rootfs: $ROOTFS_IMAGE up to date"
    else
        run_logged "$LOGS/rootfs-import.log" "docker import of the rootfs" \
            docker import --change "LABEL $INPUTS_LABEL=$want" --change 'CMD ["bash"]' "$tarball" "$ROOTFS_IMAGE"
        say "rootfs: imported $ROOTFS_IMAGE ($((SECONDS - started)) s, $(image_size_mb "$ROOTFS_IMAGE"))"
    fi
}

# --- 3. wheelhouses: built on the host (pip inside containers cannot reach the index) ---------

check_host_python() {
    local version
    version="$("$HOST_PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" \
        || fail "HOST_PYTHON=$HOST_PYTHON does not run"
    [ "$version" = "3.11" ] \
        || fail "HOST_PYTHON=$HOST_PYTHON is Python $version; the images use Debian bookworm's Python 3.11: set HOST_PYTHON to a Python 3.11 with pip"
    "$HOST_PYTHON" -m pip --version >/dev/null 2>&1 || fail "HOST_PYTHON=$HOST_PYTHON has no pip"
}

# build_wheelhouse NAME LOCKFILE [EXTRA_REQUIREMENT...]: $CACHE/wheels/NAME, rebuilt only when
# the lock file (or the extras) changed.
build_wheelhouse() {
    local name="$1" lock="$2" started=$SECONDS
    shift 2
    local dir="$CACHE/wheels/$name" want
    want="$(hash_inputs "$lock" "$*")"
    if [ "$FORCE" != 1 ] && [ -d "$dir" ] && [ "$(cat "$dir.stamp" 2>/dev/null)" = "$want" ]; then
        say "wheelhouse $name: up to date ($(find "$dir" -name '*.whl' | wc -l) wheels)"
        return
    fi
    check_host_python
    say "wheelhouse $name: pip wheel -r ${lock#"$REPO/"}${*:+ $*}"
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    run_logged "$LOGS/wheels-$name.log" "pip wheel for $name" \
        "$HOST_PYTHON" -m pip wheel --no-cache-dir -w "$dir.tmp" -r "$lock" "$@"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
    printf '%s\n' "$want" > "$dir.stamp"
    say "wheelhouse $name: $(find "$dir" -name '*.whl' | wc -l) wheels, $(du -sm "$dir" | cut -f1) MB ($((SECONDS - started)) s)"
}

# --- 4. images --------------------------------------------------------------------------------

# build_image NAME FOLDER [WHEELHOUSE]: stage the build context (folder + wheels/), skip when the
# image already carries the same inputs hash, else docker build.
build_image() {
    local name="$1" folder="$2" wheels="${3:-}" started=$SECONDS
    local ctx="$CACHE/context/$folder"
    rm -rf "$ctx" && mkdir -p "$ctx"
    cp -a "$HERE/$folder/." "$ctx/"
    if [ -n "$wheels" ]; then
        cp -al "$CACHE/wheels/$wheels" "$ctx/wheels" 2>/dev/null || cp -a "$CACHE/wheels/$wheels" "$ctx/wheels"
    fi
    local parent want
    parent="$(awk 'toupper($1) == "FROM" { print $2; exit }' "$ctx/Dockerfile")"
    want="$(hash_inputs "$ctx" "parent=$(image_id "$parent")" "$DEBIAN_MIRROR" "$DEBIAN_SECURITY_MIRROR")"
    if [ "$FORCE" != 1 ] && [ "$(image_inputs "$name")" = "$want" ]; then
        say "$name: up to date ($(image_size_mb "$name"))"
        return
    fi
    local log="$LOGS/build-${folder}.log" no_cache=()
    [ "$FORCE" = 1 ] && no_cache=(--no-cache)
    run_logged "$log" "docker build of $name" \
        docker build "${no_cache[@]}" --network host --label "$INPUTS_LABEL=$want" \
            --build-arg "DEBIAN_MIRROR=$DEBIAN_MIRROR" --build-arg "DEBIAN_SECURITY_MIRROR=$DEBIAN_SECURITY_MIRROR" \
            -t "$name" "$ctx"
    say "$name: built ($((SECONDS - started)) s, $(image_size_mb "$name"))"
}

main() {
    local started=$SECONDS entry name folder lock
    ensure_prerequisites
    exec 9>"$CACHE/.lock"
    flock 9 || fail "cannot lock $CACHE/.lock"
    check_coverage
    build_rootfs_image
    build_image "$BASE_IMAGE" base
    for entry in "${STANDINS[@]}"; do
        IFS='|' read -r name folder lock <<< "$entry"
        if [ "$lock" = "-" ]; then
            build_image "$name" "$folder"
        elif [ "$folder" = python ]; then
            # shellcheck disable=SC2086  # PYTHON_BUILD_TOOLS is a list of requirements
            build_wheelhouse "$folder" "$REPO/$lock" $PYTHON_BUILD_TOOLS
            build_image "$name" "$folder" "$folder"
        else
            build_wheelhouse "$folder" "$REPO/$lock"
            build_image "$name" "$folder" "$folder"
        fi
    done
    # Images replaced by a rebuild keep our label but lose their name: remove them.
    local reclaimed
    reclaimed="$(docker image prune -f --filter dangling=true --filter "label=$INPUTS_LABEL" 2>/dev/null | sed -n 's/^Total reclaimed space: //p')"
    [ -z "$reclaimed" ] || [ "$reclaimed" = 0B ] || say "removed replaced stand-in images ($reclaimed)"
    say "done: ${#STANDINS[@]} stand-in images ready in $((SECONDS - started)) s (use them with infra/offline/compose.loopback.yml)"
}

# Run only when executed, so tests can `source` this file and call single functions.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    main "$@"
fi
