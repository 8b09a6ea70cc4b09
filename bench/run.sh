#!/usr/bin/env bash
# The benchmark, from one command (as root):
#   bash bench/run.sh            full workloads, 3 runs each, all tools
#   bash bench/run.sh --quick    each workload once at small size: checks convergence (CI)
# Extra arguments go to bench/bench.py (--runs, --workloads 1,3, --tools synckit,syncthing ...).
# It installs Syncthing from Debian if missing and builds syncctl in release mode. Everything
# runs in a network namespace that has only `lo` (see bench/bench.py).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
if ! command -v syncthing >/dev/null; then
    echo "bench: installing syncthing"
    # Keep the package's service from starting (it would listen on the real interfaces).
    made_policy=""
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq syncthing >/dev/null
    [[ -n $made_policy ]] && rm -f /usr/sbin/policy-rc.d
fi
swift build -c release --static-swift-stdlib --product syncctl --scratch-path .build-release 2>&1 | tail -n 1
bin="$(swift build -c release --static-swift-stdlib --scratch-path .build-release --show-bin-path)/syncctl"
echo "bench: $(syncthing --version | head -1)"
exec python3 bench/bench.py --syncctl "$bin" "$@"
