#!/bin/sh
# Starts the test node in the background and prints its URL as the last line, once it answers.
#   tools/opensearch/start.sh STATE_DIR [TestNode options, e.g. --exit-with PID]
# STATE_DIR gets pid, url and node.log. A node already running from STATE_DIR is reused.
# OPENSEARCH_JAVA_OPTS overrides the heap (default -Xms512m -Xmx1g: the machine is shared with
# the test suite); OPENSEARCH_START_TIMEOUT the seconds to wait for readiness (default 300).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
target="$here/target"
state=${1:?"usage: start.sh STATE_DIR [TestNode options]"}
shift
mkdir -p "$state"
state=$(cd "$state" && pwd)
if [ ! -f "$target/classes/feedrank/opensearch/TestNode.class" ]; then
    echo "the test node must be built first (make opensearch-build); got no $target/classes" >&2
    exit 2
fi
if [ -f "$state/pid" ] && [ -f "$state/url" ] && kill -0 "$(cat "$state/pid")" 2>/dev/null; then
    cat "$state/url"
    exit 0
fi
rm -f "$state/pid" "$state/url"
# setsid: the node outlives the shell that started it and gets no terminal signals.
setsid java ${OPENSEARCH_JAVA_OPTS:--Xms512m -Xmx1g} \
    -Dopensearch.set.netty.runtime.available.processors=false \
    -cp "$target/classes:$target/lib/*:$target/knn/*" \
    feedrank.opensearch.TestNode --pid-file "$state/pid" "$@" \
    </dev/null >"$state/node.log" 2>&1 &
launched=$!
waited=0
limit=${OPENSEARCH_START_TIMEOUT:-300}
while :; do
    url=$(grep -m1 '^http://' "$state/node.log" 2>/dev/null || true)
    if [ -n "$url" ]; then
        break
    fi
    if ! kill -0 "$launched" 2>/dev/null; then
        echo "the OpenSearch test node exited before it was ready; its log ($state/node.log) ends:" >&2
        tail -n 20 "$state/node.log" >&2
        exit 1
    fi
    if [ "$waited" -ge "$limit" ]; then
        echo "the OpenSearch test node must answer within ${limit}s; it did not (log: $state/node.log)" >&2
        kill "$launched" 2>/dev/null || true
        exit 1
    fi
    sleep 1
    waited=$((waited + 1))
done
echo "$url" >"$state/url"
echo "$url"
