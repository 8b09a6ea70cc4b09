#!/usr/bin/env bash
# Whole-cluster simulations from seeds (SyncKitTesting's SimulatedCluster): builds synckit-sim in
# release, in the same scratch folder and with the same flags as the benchmark's syncctl (so a
# CI run compiles the shared modules once), and runs 1,000 seeds on every core; any other
# arguments go to synckit-sim (--seeds N, --from S, --seed S, --long).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
flags=(-c release --static-swift-stdlib --scratch-path .build-release)
swift build "${flags[@]}" --product synckit-sim 2>&1 | tail -n 1
bin="$(swift build "${flags[@]}" --show-bin-path)/synckit-sim"
# Dictionaries iterate in the same order in every run: a failing seed replays exactly.
export SWIFT_DETERMINISTIC_HASHING=1
if (($# == 0)); then set -- --seeds 1000; fi
exec "$bin" "$@"
