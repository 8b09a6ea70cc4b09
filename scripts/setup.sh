#!/usr/bin/env bash
# Installs what building SyncKit needs on a fresh Debian (bookworm) machine, skipping what is
# already there. Needs root (or sudo) for apt-get; the Swift 6 toolchain must be on PATH.
set -euo pipefail

# dosfstools and fusefat: the test of a folder on a real FAT file system (case-insensitive
# names), mounted through FUSE since kernels in containers often lack the vfat module.
# curl: the test of the dashboard over HTTPS (--gui-tls).
need=(libsqlite3-dev libsystemd-dev liblz4-dev pkgconf tcpdump dosfstools fusefat curl)
missing=()
for p in "${need[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v swift >/dev/null 2>&1; then
    for d in /opt/swift/usr/bin /usr/share/swift/usr/bin; do [[ -x $d/swift ]] && export PATH="$d:$PATH"; done
fi
command -v swift >/dev/null 2>&1 || { echo "setup: Swift 6 is not installed (see https://www.swift.org/install/linux/)" >&2; exit 1; }
