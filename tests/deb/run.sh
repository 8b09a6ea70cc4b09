#!/usr/bin/env bash
# Installs the Debian package on two fresh Debian bookworm machines (containers with systemd
# as PID 1) and checks that it behaves like a Debian service:
#
#   1. `apt-get install ./synckit_*.deb` works offline on a bare bookworm with systemd.
#   2. systemd started and enabled synckit.service, as the user synckit, logging to the journal
#      by syncctl's native journald handler; the config is a conffile.
#   3. `man syncctl` shows the page (no groff warnings) with every subcommand, and the bash,
#      zsh and fish completions are where those shells look (bash's one loads).
#   4. The two services sync once each trusts the other's ID and lists it as a peer (files
#      written on node-a appear on node-b and the other way), and `syncctl status` answers;
#      the dashboard answers on 127.0.0.1:8384 with the key `syncctl gui-url` prints, and not
#      from the other machine.
#   5. A SIGKILLed daemon is restarted by systemd (Restart=on-failure).
#   6. The template unit runs a user's own folder: synckit@alice.
#   7. Reinstalling restarts the service; `apt-get remove` stops it and keeps the data and the
#      config; `apt-get purge` deletes both.
#
#   bash tests/deb/run.sh                     # builds the .deb with scripts/package.sh
#   SYNCKIT_DEB=dist/synckit_X_amd64.deb bash tests/deb/run.sh   # tests that package
#
# Images: the debootstrap base synckit-base:bookworm (made here like compose/test.sh makes it,
# if missing, and kept for both) and synckit-systemd:bookworm built from it with systemd
# (tests/deb/Dockerfile; kept as a cache, so later runs build nothing). SYNCKIT_BASE_IMAGE and
# SYNCKIT_SYSTEMD_IMAGE name others. The containers sit on an --internal Docker network of
# their own (no route out, no multicast on the host's interfaces; discovery is static).
# Needs root (Docker). dockerd is started only if none answers, and only that one is stopped.
set -euo pipefail
cd "$(dirname "$0")/../.."
BASE_IMAGE=${SYNCKIT_BASE_IMAGE:-synckit-base:bookworm}
SYSTEMD_IMAGE=${SYNCKIT_SYSTEMD_IMAGE:-synckit-systemd:bookworm}
RUN_ID=synckit-deb-$$
NET=$RUN_ID
CONTAINERS=()
DOCKERD_PID=""
START=$(date +%s.%N)
log() { echo "deb-test: $*"; }
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
fail() { log "FAIL: $*"; exit 1; }

# ---- tools and engine ----
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v dpkg-deb >/dev/null || missing+=(dpkg)
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cleanup() {
    local status=$?
    if [[ $status -ne 0 ]]; then
        for c in "${CONTAINERS[@]}"; do
            echo "==== $c: systemctl status synckit; journalctl (last 60 lines)"
            docker exec "$c" systemctl --no-pager status synckit 2>&1 | head -20 || true
            docker exec "$c" journalctl --no-pager -n 60 2>&1 || true
        done
    fi
    for c in "${CONTAINERS[@]}"; do docker rm -f "$c" >/dev/null 2>&1 || true; done
    docker network rm "$NET" >/dev/null 2>&1 || true
    if [[ -n $DOCKERD_PID ]]; then kill "$DOCKERD_PID" 2>/dev/null || true; wait "$DOCKERD_PID" 2>/dev/null || true; fi
    exit $status
}
trap cleanup EXIT

if ! docker info >/dev/null 2>&1; then
    log "starting dockerd"
    dockerd >/tmp/synckit-deb-dockerd.log 2>&1 &
    DOCKERD_PID=$!
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { log "dockerd did not start"; tail -20 /tmp/synckit-deb-dockerd.log; exit 1; }
fi

# ---- the package (built while nothing else needs the CPU) ----
t=$(date +%s.%N)
if [[ -n ${SYNCKIT_DEB:-} ]]; then
    DEB=$(realpath "$SYNCKIT_DEB")
else
    DEB=$(bash scripts/package.sh | tail -n 1)   # its progress goes to stderr
fi
[[ -f $DEB ]] || fail "no package at $DEB"
log "package $(basename "$DEB") ($(du -h --apparent-size "$DEB" | cut -f1)) ready after $(since "$t") s"

# ---- images ----
t=$(date +%s.%N)
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    # The same base as compose/test.sh's (same packages), so either test reuses the other's.
    log "making the bookworm base image $BASE_IMAGE with debootstrap"
    rootfs=$(mktemp -d /tmp/synckit-rootfs.XXXXXX)
    debootstrap --variant=minbase --include=libsqlite3-0,libsystemd0 bookworm "$rootfs" http://deb.debian.org/debian >/tmp/synckit-deb-debootstrap.log 2>&1 \
        || { tail -20 /tmp/synckit-deb-debootstrap.log; rm -rf "$rootfs"; exit 1; }
    tar -C "$rootfs" -c . | docker import - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
fi
# Docker's layer cache makes this a no-op while the base and the Dockerfile are unchanged.
docker build -q -t "$SYSTEMD_IMAGE" --build-arg BASE_IMAGE="$BASE_IMAGE" tests/deb >/tmp/$RUN_ID-build.log 2>&1 \
    || { cat /tmp/$RUN_ID-build.log; rm -f /tmp/$RUN_ID-build.log; fail "could not build $SYSTEMD_IMAGE"; }
rm -f /tmp/$RUN_ID-build.log
log "images ready after $(since "$t") s"

# ---- two machines ----
# systemd as PID 1 needs to mount (PrivateTmp, ProtectSystem: the unit's sandbox) and to run
# its own cgroup tree. --privileged gives that, but Docker refuses it where its own bounding
# set lacks a capability (some CI sandboxes): then every capability the host has is added.
CAP_NAMES=(CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE
    NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO SYS_CHROOT
    SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE
    AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ
    PERFMON BPF CHECKPOINT_RESTORE)
bounding=$((16#$(awk '/^CapBnd/ { print $2 }' /proc/self/status)))
privileges=(--privileged)
for i in "${!CAP_NAMES[@]}"; do
    if (( !(bounding >> i & 1) )); then
        privileges=(--cap-add=ALL --security-opt seccomp=unconfined --security-opt apparmor=unconfined)
        for j in "${!CAP_NAMES[@]}"; do (( bounding >> j & 1 )) || privileges+=(--cap-drop="${CAP_NAMES[$j]}"); done
        break
    fi
done
t=$(date +%s.%N)
docker network create --internal "$NET" >/dev/null
for n in a b; do
    c=$RUN_ID-$n
    docker run -d --name "$c" --hostname "node-$n" --network "$NET" --network-alias "node-$n" \
        "${privileges[@]}" --cgroupns=private --tmpfs /run --tmpfs /run/lock \
        "$SYSTEMD_IMAGE" /lib/systemd/systemd >/dev/null
    CONTAINERS+=("$c")
done
A=$RUN_ID-a B=$RUN_ID-b
on() { local c=$1; shift; docker exec "$c" "$@"; }
# Asked too early (before PID 1 listens on its bus), systemctl fails at once instead of
# waiting: ask again until systemd says it finished booting.
for c in "$A" "$B"; do
    deadline=$(( $(date +%s) + 90 ))
    until state=$(timeout 30 docker exec "$c" systemctl is-system-running --wait 2>/dev/null); [[ $state == running || $state == degraded ]]; do
        (( $(date +%s) < deadline )) || fail "systemd in $c did not come up (state '$state')"
        sleep 0.5
    done
done
log "two systemd machines up in $(since "$t") s"

# Waits until `$2...` (run in container $1) succeeds; $what names it in the failure.
wait_for() {
    local what=$1 secs=$2 c=$3; shift 3
    local deadline=$(( $(date +%s) + secs ))
    until on "$c" "$@" >/dev/null 2>&1; do
        (( $(date +%s) < deadline )) || fail "$what (waited $secs s)"
        sleep 0.3
    done
}

# ---- 1, 2: install; the service runs ----
for c in "$A" "$B"; do
    docker cp "$DEB" "$c:/tmp/synckit.deb"
    t=$(date +%s.%N)
    on "$c" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q /tmp/synckit.deb >/tmp/$RUN_ID-apt.log 2>&1 \
        || { cat /tmp/$RUN_ID-apt.log; rm -f /tmp/$RUN_ID-apt.log; fail "apt-get install on $c"; }
    rm -f /tmp/$RUN_ID-apt.log
    log "$c: installed in $(since "$t") s"
    wait_for "synckit.service active on $c" 20 "$c" systemctl is-active --quiet synckit
    [[ $(on "$c" systemctl is-enabled synckit) == enabled ]] || fail "synckit.service not enabled on $c"
done
sleep 3   # a daemon that refuses its config exits within this; Restart= would show it
for c in "$A" "$B"; do
    on "$c" systemctl is-active --quiet synckit || fail "synckit.service did not stay up on $c"
    [[ $(on "$c" systemctl show -p NRestarts --value synckit) == 0 ]] || fail "synckit.service restarted on $c"
    [[ $(on "$c" ps -o user= -C syncctl | sort -u) == synckit ]] || fail "syncctl does not run as synckit on $c"
    [[ -n $(on "$c" journalctl -u synckit -o json --no-pager | grep '"_TRANSPORT":"journal"' | grep '"SYSLOG_IDENTIFIER":"syncctl"') ]] \
        || fail "no syncctl line sent to the journal natively on $c"
    on "$c" dpkg-query -W -f='${Conffiles}\n' synckit | grep -q /etc/synckit/config.yaml || fail "config.yaml is not a conffile"
done
log "PASS service: active, enabled, running as synckit, logging to the journal (journalctl -u synckit)"

# ---- 3: man page and completions ----
on "$A" man -w syncctl | grep -qx /usr/share/man/man1/syncctl.1.gz || fail "man -w syncctl"
# Not on a terminal, man prints plain text (no overstrike).
man_text=$(on "$A" env MANWIDTH=100 man syncctl 2>/dev/null)
warnings=$(on "$A" env MANWIDTH=100 man --warnings syncctl 2>&1 >/dev/null || true)
[[ -z $warnings ]] || { echo "$warnings"; fail "groff warnings in syncctl(1)"; }
# Every visible subcommand of the installed binary, nested ones too, has its section.
commands=$(on "$A" syncctl --experimental-dump-help | python3 -c '
import json, sys
def walk(c, path):
    for s in c.get("subcommands", []):
        if s.get("shouldDisplay", True) and s["commandName"] != "help":
            print(" ".join(path + [s["commandName"]])); walk(s, path + [s["commandName"]])
walk(json.load(sys.stdin)["command"], ["syncctl"])')
while read -r cmd; do
    grep -q "^   $cmd\$" <<<"$man_text" || fail "no section '$cmd' in man syncctl"
done <<<"$commands"
for f in /usr/share/bash-completion/completions/syncctl /usr/share/zsh/vendor-completions/_syncctl \
         /usr/share/fish/vendor_completions.d/syncctl.fish; do
    on "$A" test -s "$f" || fail "missing completion $f"
done
on "$A" bash -c '. /usr/share/bash-completion/bash_completion; . /usr/share/bash-completion/completions/syncctl; complete -p syncctl' >/dev/null \
    || fail "the bash completion does not load"
log "PASS man syncctl ($(wc -l <<<"$commands") commands, no groff warnings) and bash/zsh/fish completions"

# ---- 4: the two services sync ----
id_a=$(on "$A" runuser -u synckit -- syncctl id --dir /var/lib/synckit/Sync | head -n 1)
id_b=$(on "$B" runuser -u synckit -- syncctl id --dir /var/lib/synckit/Sync | head -n 1)
[[ -n $id_a && -n $id_b && $id_a != "$id_b" ]] || fail "node IDs: '$id_a' '$id_b'"
on "$A" sh -c "echo $id_b >> /etc/synckit/trusted-ids && echo node-b:22000 >> /etc/synckit/peers"
on "$B" sh -c "echo $id_a >> /etc/synckit/trusted-ids && echo node-a:22000 >> /etc/synckit/peers"
on "$A" systemctl restart synckit
on "$B" systemctl restart synckit
t=$(date +%s.%N)
on "$A" runuser -u synckit -- sh -c 'cd /var/lib/synckit/Sync && echo "written on node-a" > from-a.txt && mkdir -p docs/deep && head -c 3000000 /dev/urandom > docs/deep/blob.bin'
sum_a=$(on "$A" sha256sum /var/lib/synckit/Sync/docs/deep/blob.bin | cut -d' ' -f1)
wait_for "from-a.txt and docs/deep/blob.bin reach node-b" 60 "$B" \
    sh -c "grep -qx 'written on node-a' /var/lib/synckit/Sync/from-a.txt && echo '$sum_a  /var/lib/synckit/Sync/docs/deep/blob.bin' | sha256sum -c --status"
log "PASS node-a -> node-b: a text file and 3 MB in a nested folder in $(since "$t") s"
t=$(date +%s.%N)
on "$B" runuser -u synckit -- sh -c 'cd /var/lib/synckit/Sync && echo "written on node-b" > from-b.txt && echo "edited on node-b" >> from-a.txt'
wait_for "from-b.txt and the edit of from-a.txt reach node-a" 60 "$A" \
    sh -c "grep -qx 'written on node-b' /var/lib/synckit/Sync/from-b.txt && grep -qx 'edited on node-b' /var/lib/synckit/Sync/from-a.txt"
log "PASS node-b -> node-a: a new file and an edit in $(since "$t") s"
on "$A" syncctl status --dir /var/lib/synckit/Sync >/dev/null || fail "syncctl status --dir /var/lib/synckit/Sync"

# ---- 4b: the dashboard, on loopback only (gui-address in the default config) ----
url=$(on "$A" syncctl gui-url --dir /var/lib/synckit/Sync) || fail "syncctl gui-url"
[[ $url == http://127.0.0.1:8384*#key=* ]] || fail "gui-url printed '$url'"
key=$(on "$A" syncctl gui-url --dir /var/lib/synckit/Sync --key-only)
on "$A" curl -fsS --max-time 5 http://127.0.0.1:8384/rest/health | grep -q ok || fail "GET /rest/health"
on "$A" curl -fsS --max-time 5 -H "X-API-Key: $key" http://127.0.0.1:8384/rest/status >/dev/null || fail "GET /rest/status with the key"
code=$(on "$A" curl -s -o /dev/null -w '%{http_code}' --max-time 5 http://127.0.0.1:8384/rest/status || true)
[[ $code == 401 ]] || fail "GET /rest/status without the key answered $code, not 401"
! on "$B" curl -fsS --max-time 5 -o /dev/null http://node-a:8384/rest/health 2>/dev/null || fail "the dashboard answers from another machine"
log "PASS dashboard at 127.0.0.1:8384 (gui-url, key required, not reachable from node-b)"

# ---- 5: systemd restarts a daemon that dies ----
pid=$(on "$A" systemctl show -p MainPID --value synckit)
on "$A" systemctl kill -s SIGKILL synckit
wait_for "synckit.service restarted after SIGKILL" 30 "$A" \
    sh -c "systemctl is-active --quiet synckit && [ \$(systemctl show -p MainPID --value synckit) != $pid ] && [ \$(systemctl show -p NRestarts --value synckit) -ge 1 ]"
t=$(date +%s.%N)
on "$B" runuser -u synckit -- sh -c 'echo "after the restart" > /var/lib/synckit/Sync/after-restart.txt'
wait_for "after-restart.txt reaches the restarted node-a" 60 "$A" test -f /var/lib/synckit/Sync/after-restart.txt
log "PASS SIGKILL: systemd restarted the daemon, which synced again ($(since "$t") s)"

# ---- 6: the template unit, for one user's folder ----
on "$A" useradd -m alice
on "$A" runuser -u alice -- sh -c 'h=/home/alice; mkdir -p $h/Sync $h/.config/synckit && : > $h/.config/synckit/trusted-ids && : > $h/.config/synckit/peers \
    && printf "dir: $h/Sync\nport: 22001\ngui-address: 127.0.0.1:8385\ntrust-file: $h/.config/synckit/trusted-ids\npeers-file: $h/.config/synckit/peers\n" > $h/.config/synckit/config.yaml'
on "$A" systemctl start synckit@alice
sleep 2
on "$A" systemctl is-active --quiet synckit@alice || fail "synckit@alice is not active"
on "$A" test -d /home/alice/Sync/.synckit || fail "synckit@alice made no state in /home/alice/Sync/.synckit"
[[ $(on "$A" sh -c 'ps -o user= -p "$(systemctl show -p MainPID --value synckit@alice)"') == alice ]] || fail "synckit@alice does not run as alice"
wait_for "synckit@alice's dashboard on 127.0.0.1:8385" 10 "$A" curl -fsS --max-time 2 http://127.0.0.1:8385/rest/health
log "PASS synckit@alice runs as alice on /home/alice/Sync, dashboard on 127.0.0.1:8385"

# ---- 7: upgrade (same version again), remove, purge ----
pid=$(on "$A" systemctl show -p MainPID --value synckit)
on "$A" env DEBIAN_FRONTEND=noninteractive dpkg -i /tmp/synckit.deb >/dev/null
wait_for "synckit.service active after reinstalling" 20 "$A" systemctl is-active --quiet synckit
[[ $(on "$A" systemctl show -p MainPID --value synckit) != "$pid" ]] || fail "reinstalling did not restart synckit.service"
on "$A" grep -q "$id_b" /etc/synckit/trusted-ids || fail "reinstalling lost the edited conffile"
on "$B" env DEBIAN_FRONTEND=noninteractive apt-get remove -y -q synckit >/dev/null 2>&1
! on "$B" systemctl is-active --quiet synckit || fail "synckit.service still active after apt-get remove"
on "$B" test -f /var/lib/synckit/Sync/from-a.txt || fail "apt-get remove deleted the folder"
on "$B" test -f /etc/synckit/config.yaml || fail "apt-get remove deleted the config"
on "$B" env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q synckit >/dev/null 2>&1
! on "$B" test -e /var/lib/synckit || fail "apt-get purge left /var/lib/synckit"
! on "$B" test -e /etc/synckit || fail "apt-get purge left /etc/synckit"
! on "$B" test -e /usr/bin/syncctl || fail "apt-get purge left /usr/bin/syncctl"
log "PASS reinstall restarts the service and keeps the edited config; remove keeps data and config; purge deletes them"

log "PASS in $(since "$START") s"
