#!/usr/bin/env bash
# Runs the four-node Compose demo for real and checks that it converges.
#
# 1. Installs a Docker engine, docker-compose and debootstrap from Debian if missing, and
#    starts dockerd in the background if none answers.
# 2. Makes a Debian bookworm base image with debootstrap + `docker import` (no registry needed;
#    a pulled debian:bookworm-slim is used when the registry answers).
# 3. Builds syncctl on the host (release, --static-swift-stdlib) and the node image from it.
# 4. Brings node1..node4 up and waits until all four folders hold the union (by SHA-256).
# 5. Adds a file on node2, edits one on node3, deletes one on node4: waits again.
# 6. Stops node1, changes files on the others, starts node1: waits again.
# 7. Tears everything down. On failure it prints every node's log. Exit status: 0 = pass.
# Needs root (Docker). Everything it starts is stopped by PID or by compose.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DATA=$ROOT/compose/data
PROJECT=synckit-test
BASE_IMAGE=synckit-base:bookworm
export SYNCKIT_IMAGE_TARGET=prebuilt SYNCKIT_BASE_IMAGE=$BASE_IMAGE SYNCKIT_IMAGE_TAG=test
export SYNCKIT_CLUSTER_KEY="compose-test-$RANDOM$RANDOM"
DOCKERD_PID=""
log() { echo "compose-test: $*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---- tools and engine ----
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || missing+=(docker-compose)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi
COMPOSE+=(-p "$PROJECT" -f compose/compose.yaml)

cleanup() {
    local status=$?
    if [[ $status -ne 0 ]]; then
        log "FAILED; node logs follow"
        "${COMPOSE[@]}" logs --no-color 2>&1 | tail -n 400 || true
    fi
    "${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
    rm -rf "$DATA"
    if [[ -n $DOCKERD_PID ]]; then kill "$DOCKERD_PID" 2>/dev/null || true; wait "$DOCKERD_PID" 2>/dev/null || true; fi
    exit $status
}
trap cleanup EXIT

if ! docker info >/dev/null 2>&1; then
    log "starting dockerd"
    dockerd >/tmp/synckit-dockerd.log 2>&1 &
    DOCKERD_PID=$!
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { log "dockerd did not start"; tail -20 /tmp/synckit-dockerd.log; exit 1; }
fi

# ---- base image ----
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    if timeout 60 docker pull -q debian:bookworm-slim >/dev/null 2>&1; then
        docker tag debian:bookworm-slim "$BASE_IMAGE"
    else
        log "no registry: making a bookworm base image with debootstrap"
        rootfs=$(mktemp -d /tmp/synckit-rootfs.XXXXXX)
        debootstrap --variant=minbase --include=libsqlite3-0,libsystemd0 bookworm "$rootfs" http://deb.debian.org/debian >/tmp/synckit-debootstrap.log 2>&1 \
            || { tail -20 /tmp/synckit-debootstrap.log; exit 1; }
        tar -C "$rootfs" -c . | docker import - "$BASE_IMAGE" >/dev/null
        rm -rf "$rootfs"
    fi
fi

# ---- syncctl and the image ----
source scripts/setup.sh
log "building syncctl (release, static Swift runtime)"
swift build -c release --static-swift-stdlib --product syncctl --scratch-path .build-release 2>&1 | tail -n 1
mkdir -p compose/bin
cp "$(swift build -c release --static-swift-stdlib --scratch-path .build-release --show-bin-path)/syncctl" compose/bin/syncctl
"${COMPOSE[@]}" build -q 2>&1 | tail -n 5

# ---- helpers ----
# Content digest of a node's folder: one line per file (path and SHA-256), state dir excluded.
digest() {
    # A temp file renamed away between listing and hashing is not an error.
    (cd "$DATA/$1" && find . -path ./.synckit -prune -o -type f -print0 | sort -z | xargs -0 -r sha256sum 2>/dev/null) || true
}
# Waits until all four folders are identical and `check` holds on node1's; reports the time
# since `start` (when the change was made).
wait_converged() {
    local what=$1 check=$2 start=$3 deadline
    deadline=$(( $(date +%s) + 90 ))
    while (( $(date +%s) < deadline )); do
        local d1 d2 d3 d4
        d1=$(digest node1); d2=$(digest node2); d3=$(digest node3); d4=$(digest node4)
        if [[ $d1 == "$d2" && $d1 == "$d3" && $d1 == "$d4" ]] && (cd "$DATA/node1" && eval "$check"); then
            if ! grep -q synckit-tmp <<<"$d1"; then
                log "$what: converged in $(since "$start") s ($(wc -l <<<"$d1") files on each node)"
                return 0
            fi
        fi
        sleep 0.2
    done
    log "$what: no convergence within the deadline"
    for n in node1 node2 node3 node4; do echo "== $n"; digest $n; done
    return 1
}

# ---- the demo ----
rm -rf "$DATA"
mkdir -p "$DATA"/node{1,2,3,4}
t=$(now)
"${COMPOSE[@]}" up -d >/dev/null 2>&1
log "containers up after $(since "$t") s"
seeded=$(find compose/seed -type f | wc -l)
wait_converged "first convergence (from docker compose up) (4 nodes, union of $seeded seed files)" \
    '[[ -f node1-docs/notes.txt && -f node2-docs/notes.txt && -f node3-docs/notes.txt && -f node4-docs/notes.txt && -f README-shared.txt ]] && ls | grep -q sync-conflict' "$t"

t=$(now)
echo "added on node2" > "$DATA/node2/added-on-node2.txt"
echo "node3 edited these notes" >> "$DATA/node3/node1-docs/notes.txt"
rm "$DATA/node4/node2-docs/data-2.bin"
wait_converged "add on node2, edit on node3, delete on node4" \
    '[[ -f added-on-node2.txt && ! -f node2-docs/data-2.bin ]] && grep -q "node3 edited" node1-docs/notes.txt' "$t"

"${COMPOSE[@]}" stop node1 >/dev/null 2>&1
echo "written while node1 was down" > "$DATA/node2/while-node1-down.txt"
rm "$DATA/node3/node3-docs/nested/deeper/deep-3.md"
echo "changed while node1 was down" >> "$DATA/node4/node4-docs/notes.txt"
sleep 1
start_node1=$(now)
"${COMPOSE[@]}" start node1 >/dev/null 2>&1
wait_converged "node1 stopped, others changed, node1 started again (from its start)" \
    '[[ -f while-node1-down.txt && ! -f node3-docs/nested/deeper/deep-3.md ]] && grep -q "while node1 was down" node4-docs/notes.txt' "$start_node1"
log "PASS"
