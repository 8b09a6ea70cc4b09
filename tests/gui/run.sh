#!/usr/bin/env bash
# Browser test of the dashboard: a 3-node `syncctl run` cluster on 127.0.0.1, node 0's page in
# headless Chromium through Selenium (see browser_test.py for what is checked). About 1-2
# minutes on 2 cores. Meant for a fresh Debian bookworm machine, run as root: installs
# chromium, chromium-driver and python3-selenium with apt-get when they are missing.
#
#   bash tests/gui/run.sh                      # syncctl from the release build in .build-release
#   SYNCCTL=/path/to/syncctl bash tests/gui/run.sh
#   bash tests/gui/run.sh --big-mib 1024       # extra arguments go to browser_test.py
#
# It builds nothing: build first with
#   swift build -c release --static-swift-stdlib --product syncctl --scratch-path .build-release
# Screenshots land in tests/gui/out/ (gitignored). Exit status: browser_test.py's.
set -euo pipefail
cd "$(dirname "$0")/../.."

# Debian's python3 is the one python3-selenium installs into (a pyenv or venv python3 earlier
# in PATH would not see it).
PY=/usr/bin/python3
[[ -x "$PY" ]] || PY="$(command -v python3)"

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
"$PY" -c 'import selenium' >/dev/null 2>&1 || missing+=(python3-selenium)
if ((${#missing[@]})); then
    echo "installing ${missing[*]} (apt-get)..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "${missing[@]}" >/dev/null
    PY=/usr/bin/python3
fi
# Where Debian has no python3-selenium package: from PyPI into the system python.
if ! "$PY" -c 'import selenium' >/dev/null 2>&1; then
    "$PY" -m pip install -q --break-system-packages selenium >&2
fi

if [[ -z "${SYNCCTL:-}" ]]; then
    bin=""
    if command -v swift >/dev/null 2>&1; then
        bin="$(swift build -c release --static-swift-stdlib --scratch-path .build-release --show-bin-path 2>/dev/null || true)"
    fi
    SYNCCTL="${bin:-$PWD/.build-release/release}/syncctl"
fi
if [[ ! -x "$SYNCCTL" ]]; then
    echo "tests/gui/run.sh: no syncctl at $SYNCCTL; build it first:" >&2
    echo "  swift build -c release --static-swift-stdlib --product syncctl --scratch-path .build-release" >&2
    echo "or set SYNCCTL=/path/to/syncctl" >&2
    exit 2
fi
export SYNCCTL
exec "$PY" tests/gui/browser_test.py "$@"
