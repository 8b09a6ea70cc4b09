#!/usr/bin/env bash
# Multi-host test of multicast discovery, in network namespaces this script creates.
#
# Four "hosts" (namespaces sk-h1..sk-h4, addresses 10.77.0.1-4/24) hang off one bridge that
# lives in its own namespace (sk-br): multicast never touches the machine's real interfaces.
# Each host runs `syncctl run --discovery multicast` with no peer configured and its own files.
# Checks: all four converge to the union; a node stopped with SIGTERM is reported lost by the
# others within 3 s (mDNS goodbye); a node killed with SIGKILL is reported lost within its
# host-record TTL (shortened to 6 s here); with avahi installed, `avahi-browse` on a fifth host
# lists the nodes, and a service published there with `avahi-publish` is seen by syncctl.
# Needs root and iproute2. Exit status 0 = pass. Everything is torn down at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
SYNCCTL=${SYNCCTL:-$(swift build --show-bin-path)/syncctl}
WORK=$(mktemp -d /tmp/synckit-netns.XXXXXX)
NS=(sk-h1 sk-h2 sk-h3 sk-h4)
PIDS=()
log() { echo "netns-test: $*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

cleanup() {
    local status=$?
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ $status -ne 0 ]]; then
        for i in 1 2 3 4 5; do [[ -f $WORK/n$i.log ]] && { echo "---- node $i"; tail -n 60 "$WORK/n$i.log"; }; done
    fi
    for ns in "${NS[@]}" sk-h5 sk-br; do ip netns del "$ns" 2>/dev/null || true; done
    [[ -n ${SYNCKIT_KEEP:-} ]] && echo "netns-test: kept $WORK" || rm -rf "$WORK"
    exit $status
}
trap cleanup EXIT

[[ $(id -u) -eq 0 ]] || { log "needs root (network namespaces)"; exit 1; }
# iproute2 for the namespaces; avahi and D-Bus for the interoperability part. policy-rc.d keeps
# the packages' daemons from starting in the root namespace (on the real interfaces) at install.
missing=()
command -v ip >/dev/null || missing+=(iproute2)
command -v avahi-daemon >/dev/null || missing+=(avahi-daemon)
command -v avahi-browse >/dev/null || missing+=(avahi-utils)
command -v dbus-daemon >/dev/null || missing+=(dbus)
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    made_policy=""
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null || log "could not install ${missing[*]}"
    [[ -n $made_policy ]] && rm -f /usr/sbin/policy-rc.d
fi

# ---- the private LAN ----
for ns in "${NS[@]}" sk-h5 sk-br; do ip netns del "$ns" 2>/dev/null || true; done
ip netns add sk-br
ip -n sk-br link add br0 type bridge
ip -n sk-br link set br0 up
host() {  # host <index>: a namespace with eth0 = 10.77.0.<index>/24 on the bridge
    local i=$1 ns=sk-h$1
    ip netns add "$ns"
    ip -n sk-br link add "v$i" type veth peer name eth0 netns "$ns"
    ip -n sk-br link set "v$i" master br0 up
    ip -n "$ns" addr add "10.77.0.$i/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
}
for i in 1 2 3 4; do host "$i"; done
# Let IPv6 link-local addresses finish duplicate address detection, so the nodes use both stacks.
for _ in $(seq 1 50); do
    ready=1
    for i in 1 2 3 4; do ip -n "sk-h$i" -6 addr show dev eth0 scope link | grep -q tentative && ready=0; done
    (( ready )) && break
    sleep 0.1
done

# ---- four nodes, no peers configured ----
for i in 1 2 3 4; do
    mkdir -p "$WORK/n$i/from-node$i/nested"
    echo "node $i" > "$WORK/n$i/from-node$i/hello.txt"
    head -c $((100000 + i)) /dev/urandom > "$WORK/n$i/from-node$i/nested/blob.bin"
done
start=$(now)
for i in 1 2 3 4; do
    ip netns exec "sk-h$i" env SYNCKIT_CLUSTER_KEY=netns-test "$SYNCCTL" run --dir "$WORK/n$i" --discovery multicast \
        --name "node$i" --port 22000 --log stderr --log-level info --mdns-host-ttl 6 >"$WORK/n$i.log" 2>&1 &
    PIDS+=($!)
done

# Content digest of a folder; a temp file renamed away mid-listing is not an error.
digest() { (cd "$WORK/n$1" && find . -path ./.synckit -prune -o -type f -print0 | sort -z | xargs -0 -r sha256sum 2>/dev/null) || true; }
wait_converged() {  # wait_converged <what> <nodes...>
    local what=$1; shift
    local deadline=$(( $(date +%s) + 60 ))
    while (( $(date +%s) < deadline )); do
        local first ok=1
        first=$(digest "$1")
        for n in "$@"; do [[ $(digest "$n") == "$first" ]] || ok=0; done
        if (( ok )) && [[ $(wc -l <<<"$first") -ge 8 ]] && ! grep -q synckit-tmp <<<"$first"; then
            log "$what in $(since "$start") s"
            return 0
        fi
        sleep 0.1
    done
    log "$what: no convergence"; return 1
}
wait_converged "discovery and convergence of 4 hosts" 1 2 3 4
if ip -n sk-h1 maddr show dev eth0 | grep -q "ff02::fb"; then
    log "host 1 listens on 224.0.0.251 and ff02::fb"
else
    ip -n sk-h1 maddr show dev eth0 | grep -q "224.0.0.251" && log "host 1 listens on 224.0.0.251 (no IPv6 here)"
fi

# wait_lost <node index that leaves> <seconds allowed> <what>: the other nodes log it lost.
id_of() { "$SYNCCTL" id --dir "$WORK/n$1" | head -n 1 | cut -c1-7; }   # the ID is the first line
wait_lost() {
    local gone=$1 limit=$2 what=$3 t0=$4 id others
    id=$(id_of "$gone")
    others=()
    for i in 1 2 3 4; do [[ $i != "$gone" && -n ${ALIVE[$i]:-} ]] && others+=("$i"); done
    local deadline; deadline=$(awk -v a="$t0" -v l="$limit" 'BEGIN { printf "%.2f", a + l }')
    while awk -v d="$deadline" -v n="$(now)" 'BEGIN { exit !(n < d) }'; do
        local all=1
        for i in "${others[@]}"; do grep "mDNS peer lost" "$WORK/n$i.log" | grep -q "peer.id=$id" || all=0; done
        if (( all )); then log "$what: node$gone reported lost by nodes ${others[*]} after $(since "$t0") s"; return 0; fi
        sleep 0.05
    done
    log "$what: node$gone not reported lost within $limit s"; return 1
}
declare -A ALIVE=([1]=1 [2]=1 [3]=1 [4]=1)

# Convergence can beat discovery (one node dialing is enough to sync): before testing how peers
# leave, wait until every node has found each of the other three by mDNS.
t=$(now)
for _ in $(seq 1 100); do
    all=1
    for i in 1 2 3 4; do
        for j in 1 2 3 4; do
            [[ $i == "$j" ]] && continue
            grep "mDNS peer found" "$WORK/n$i.log" | grep -q "10.77.0.$j:22000" || all=0
        done
    done
    (( all )) && break
    sleep 0.1
done
(( all )) || { log "not every node found every other one by mDNS"; exit 1; }
log "every node found the three others by mDNS ($(since "$start") s after start)"

t=$(now); kill -TERM "${PIDS[3]}"; wait "${PIDS[3]}" || true; ALIVE[4]=""
wait_lost 4 3 "goodbye (SIGTERM)" "$t"
t=$(now); kill -KILL "${PIDS[2]}"; wait "${PIDS[2]}" 2>/dev/null || true; ALIVE[3]=""
wait_lost 3 10 "TTL expiry (SIGKILL, host TTL 6 s)" "$t"

# ---- avahi interoperability, when avahi is installed ----
if command -v avahi-daemon >/dev/null && command -v avahi-browse >/dev/null && command -v dbus-daemon >/dev/null; then
    host 5
    # avahi talks to its clients over D-Bus: give host 5 its own /run with its own system bus.
    # It runs in the foreground of that shell and is stopped by PID when the shell is done.
    mkdir -p "$WORK/n5/from-node5" && echo "node 5, beside avahi" > "$WORK/n5/from-node5/hello.txt"
    ip netns exec sk-h5 env SYNCCTL="$SYNCCTL" WORK="$WORK" SYNCKIT_CLUSTER_KEY=netns-test unshare -m sh -c '
        mount -t tmpfs tmpfs /run && mkdir -p /run/dbus /run/avahi-daemon
        dbus-daemon --system --fork --nopidfile --print-pid=3 3>/run/dbus.pid
        avahi-daemon --no-drop-root --no-chroot --no-rlimits >/dev/null 2>&1 &
        AVAHI=$!
        sleep 2
        # A SyncKit node on the same host as avahi: both share UDP 5353.
        "$SYNCCTL" run --dir "$WORK/n5" --discovery multicast --name node5 --port 22000 --log stderr >"$WORK/n5.log" 2>&1 &
        NODE=$!
        avahi-publish -s "avahi test service" _synckit._tcp 22000 "txtvers=1" "id=AVAHI" "cluster=other" >/dev/null 2>&1 &
        PUBLISH=$!
        sleep 3
        timeout 8 avahi-browse -rpt _synckit._tcp
        kill $PUBLISH $AVAHI $(cat /run/dbus.pid) 2>/dev/null
        kill -TERM $NODE
        wait $PUBLISH $AVAHI $NODE 2>/dev/null
    ' >"$WORK/avahi.txt" 2>&1 || true
    if grep -q "node1" "$WORK/avahi.txt" && grep -q "node2" "$WORK/avahi.txt" && grep -q "node5" "$WORK/avahi.txt"; then
        log "avahi-browse on host 5 lists: $(grep '^=' "$WORK/avahi.txt" | cut -d';' -f4 | sort -u | tr '\n' ' ')"
    else
        log "avahi-browse did not list our nodes:"; cat "$WORK/avahi.txt"; exit 1
    fi
    grep -q "IPv6;node1" "$WORK/avahi.txt" && log "avahi also sees node1 over IPv6 (ff02::fb)"
    if grep "mDNS peer found" "$WORK/n5.log" | grep -q "10.77.0.1:22000" && [[ -f $WORK/n5/from-node1/hello.txt ]]; then
        log "node5, sharing UDP 5353 with avahi-daemon on host 5, found node1 and pulled its files"
    else
        log "node5 beside avahi did not sync"; tail -20 "$WORK/n5.log"; exit 1
    fi
    if grep -q "mDNS service seen, not a peer.*avahi test service\|avahi test service.*mDNS service seen, not a peer" "$WORK/n1.log"; then
        log "syncctl on host 1 saw the service avahi-publish announced (and ignored it: other cluster)"
    else
        log "syncctl did not see the avahi-published service"; exit 1
    fi
else
    log "avahi not installed: interoperability part skipped (apt-get install avahi-daemon avahi-utils dbus)"
fi
log "PASS"
