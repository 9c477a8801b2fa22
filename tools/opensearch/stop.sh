#!/bin/sh
# Stops the test node started by start.sh STATE_DIR (SIGTERM: the node closes cleanly; SIGKILL
# after 60 s), then forgets it.
set -eu
state=${1:?"usage: stop.sh STATE_DIR"}
if [ ! -f "$state/pid" ]; then
    echo "no OpenSearch test node recorded in $state"
    exit 0
fi
pid=$(cat "$state/pid")
if kill "$pid" 2>/dev/null; then
    n=0
    while kill -0 "$pid" 2>/dev/null && [ "$n" -lt 60 ]; do
        sleep 1
        n=$((n + 1))
    done
    kill -9 "$pid" 2>/dev/null || true
    echo "stopped the OpenSearch test node (pid $pid)"
fi
rm -f "$state/pid" "$state/url"
