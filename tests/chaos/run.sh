#!/usr/bin/env bash
# Runs the SyncKit chaos test in CI mode (3 seeds x 20 s of churn, 8 nodes; about 2-4 minutes
# on 2 cores, more when a seed fails to converge). Builds syncctl first when needed.
#
#   bash tests/chaos/run.sh                 # CI mode with the debug build (swift build --product syncctl)
#   bash tests/chaos/run.sh --seed 42       # extra arguments go to chaos.py (e.g. --seeds 5, --keep)
#   SYNCCTL=/path/to/syncctl bash tests/chaos/run.sh   # use that binary, build nothing
#   CHAOS_BUILD=release bash tests/chaos/run.sh        # release build in .build-release (the first
#                                                      # one takes a long while; nodes use less CPU)
#
# The exit status is chaos.py's: 0 when every seed held every invariant. On a failure the seed,
# a replay command and the evidence are printed, and the work directory is kept.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [[ -z "${SYNCCTL:-}" ]]; then
    if [[ "${CHAOS_BUILD:-debug}" == release ]]; then
        swift build -c release --product syncctl --scratch-path .build-release >&2
        SYNCCTL="$PWD/.build-release/release/syncctl"
    else
        swift build --product syncctl >&2
        SYNCCTL="$(swift build --product syncctl --show-bin-path)/syncctl"
    fi
fi
export SYNCCTL
exec python3 tests/chaos/chaos.py --ci "$@"
