#!/usr/bin/env bash
# The mixed-cluster test with real Syncthings (tests/bep/mixed.py), as CI runs it: installs
# Debian's syncthing when missing, builds (or reuses) the release syncctl of .build-release, and
# runs the test in a network namespace that has only lo.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v syncthing >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq syncthing >/dev/null
fi
bin="$(swift build -c release --static-swift-stdlib --scratch-path .build-release --show-bin-path)"
[ -x "$bin/syncctl" ] || swift build -c release --static-swift-stdlib --scratch-path .build-release --product syncctl
exec python3 tests/bep/mixed.py --syncctl "$bin/syncctl"
