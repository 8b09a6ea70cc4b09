#!/bin/sh
# Seeds the node's folder from /seed on its first start (when the folder has no SyncKit state
# yet), then hands over to syncctl with the arguments given by compose.yaml.
set -e
if [ -d /seed ] && [ ! -d /data/.synckit ]; then
    cp -a /seed/. /data/ 2>/dev/null || true
fi
exec /usr/local/bin/syncctl "$@"
