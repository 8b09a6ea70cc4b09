#!/usr/bin/env bash
# The test command: installs what is missing, builds once, runs every unit and integration test.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
swift build --build-tests
# The simulation tests replay a seed exactly only when dictionaries iterate alike in every run.
export SWIFT_DETERMINISTIC_HASHING=1
swift test --skip-build
