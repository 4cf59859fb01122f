#!/usr/bin/env bash
# redis-benchmark against a local 3-node ringraft-kv cluster (release build), through the
# leader and through a follower (forwarding). Needs redis-tools. Loopback only.
#
#   tools/scripts/kv-redis-bench.sh [REQUESTS] [CLIENTS]      # defaults: 100000 50
set -euo pipefail
cd "$(dirname "$0")/../.."
requests=${1:-100000}
clients=${2:-50}
cargo build --release -q -p ringraft-tools --bin ringraft-kv
dir=$(mktemp -d)
out="$dir/local.out"
target/release/ringraft-kv local --nodes 3 --dir "$dir/data" >"$out" 2>&1 &
local_pid=$!
trap 'kill -INT $local_pid 2>/dev/null; wait $local_pid 2>/dev/null; rm -rf "$dir"' EXIT
ports=()
for _ in $(seq 100); do
    mapfile -t ports < <(sed -n 's/.*node [0-9]*: client 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$out")
    [ "${#ports[@]}" -eq 3 ] && break
    sleep 0.1
done
leader=""
for _ in $(seq 100); do
    for p in "${ports[@]}"; do
        if redis-cli -p "$p" raft.info 2>/dev/null | grep -q '^role:leader'; then leader=$p; fi
    done
    [ -n "$leader" ] && break
    sleep 0.1
done
[ -n "$leader" ] || { echo "no leader"; cat "$out"; exit 1; }
follower=""
for p in "${ports[@]}"; do [ "$p" != "$leader" ] && follower=$p && break; done
for target in "leader:$leader" "follower:$follower"; do
    echo "== through the ${target%%:*} (redis-benchmark -t set,get,incr -n $requests -c $clients)"
    redis-benchmark -p "${target##*:}" -t set,get,incr -n "$requests" -c "$clients" -q 2>&1 \
        | tr '\r' '\n' | grep 'requests per second'
done
echo "counter:__rand_int__ = $(redis-cli -p "$leader" get counter:__rand_int__) (expected $((2 * requests)))"
