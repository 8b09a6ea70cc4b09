#!/usr/bin/env bash
# The main job: installs what is missing, builds syncctl, and runs a real four-node sync on this
# machine (127.0.0.1). Extra arguments go to `syncctl demo` (e.g. --nodes 6 --dir /tmp/demo).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
swift build -c release --product syncctl
exec "$(swift build -c release --show-bin-path)/syncctl" demo "$@"
