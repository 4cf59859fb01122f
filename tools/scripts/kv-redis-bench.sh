#!/usr/bin/env bash
# redis-benchmark against a local 3-node ringraft-kv cluster (release build), through the
# leader and through a follower (forwarding), beside a single unreplicated redis-server with
# `appendfsync always` and with `appendfsync no`, all in one run, RUNS rounds (the four targets
# interleaved in each round), then a Markdown table of medians. Loopback only; the data
# directories of all of them are in one temporary directory (same file system). PIPELINE > 1
# sends that many requests at a time per connection (redis-benchmark -P): ringraft-kv replicates
# each run of consecutive writes as one batch.
# Needs redis-server and redis-tools (Debian: apt-get install redis-server redis-tools).
#
#   tools/scripts/kv-redis-bench.sh [REQUESTS] [CLIENTS] [RUNS] [PIPELINE]
#                                                       # defaults: 100000 50 3 1
#   tools/scripts/kv-redis-bench.sh 200000 50 3 16      # docs/PERFORMANCE.md's pipelined table
set -euo pipefail
cd "$(dirname "$0")/../.."
requests=${1:-100000}
clients=${2:-50}
runs=${3:-3}
pipeline=${4:-1}
for tool in redis-benchmark redis-cli redis-server; do
    command -v "$tool" >/dev/null || { echo "$tool not found (apt-get install redis-server redis-tools)"; exit 1; }
done
cargo build --release -q -p ringraft-tools --bin ringraft-kv
dir=$(mktemp -d)
out="$dir/local.out"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT
echo "started $(date -u '+%Y-%m-%d %H:%M UTC'), load average: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"
target/release/ringraft-kv local --nodes 3 --dir "$dir/data" >"$out" 2>&1 &
pids+=($!)

# A free loopback port for each redis-server.
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 20000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
    done
}
start_redis() { # NAME FSYNC PORT
    mkdir -p "$dir/$1"
    redis-server --bind 127.0.0.1 --port "$3" --dir "$dir/$1" --save '' \
        --appendonly yes --appendfsync "$2" --daemonize no --logfile "$dir/$1.log" &
    pids+=($!)
}
always_port=$(free_port)
start_redis redis-always always "$always_port"
no_port=$(free_port)
while [ "$no_port" = "$always_port" ]; do no_port=$(free_port); done
start_redis redis-no no "$no_port"

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
for p in "$always_port" "$no_port"; do
    for _ in $(seq 100); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
done

targets=("ringraft-kv leader:$leader" "ringraft-kv follower:$follower"
    "redis appendfsync always:$always_port" "redis appendfsync no:$no_port")
results="$dir/results" # lines: target|command|requests/s|p50 ms
: >"$results"
for run in $(seq "$runs"); do
    for t in "${targets[@]}"; do
        name=${t%%:*}
        echo "== run $run: $name (redis-benchmark -t set,get,incr -n $requests -c $clients -P $pipeline -q)"
        lines=$(redis-benchmark -p "${t##*:}" -t set,get,incr -n "$requests" -c "$clients" \
            -P "$pipeline" -q 2>&1 \
            | tr '\r' '\n' | grep 'requests per second')
        echo "$lines"
        echo "$lines" \
            | sed -n 's/^\([A-Z]*\): \([0-9.]*\) requests per second, p50=\([0-9.]*\) msec.*/\1 \2 \3/p' \
            | while read -r cmd rps p50; do echo "$name|$cmd|$rps|$p50" >>"$results"; done
    done
done
echo "counter:__rand_int__ on ringraft-kv = $(redis-cli -p "$leader" get counter:__rand_int__)" \
    "(expected $((2 * runs * requests)): every INCR counted)"
echo "finished $(date -u '+%Y-%m-%d %H:%M UTC'), load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| command | target | requests/s (median) | runs | p50 ms (median run) |"
echo "|---|---|---|---|---|"
for cmd in SET GET INCR; do
    for t in "${targets[@]}"; do
        name=${t%%:*}
        grep -F "$name|$cmd|" "$results" | awk -F'|' -v name="$name" -v cmd="$cmd" '
            { rps[NR] = $3; p50[NR] = $4; order[NR] = NR; runs = runs (NR > 1 ? " / " : "") sprintf("%.0f", $3) }
            END {
                n = NR
                for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++)
                    if (rps[order[j]] < rps[order[i]]) { t = order[i]; order[i] = order[j]; order[j] = t }
                m = order[int((n + 1) / 2)]
                printf "| %s | %s | %.0f | %s | %s |\n", cmd, name, rps[m], runs, p50[m]
            }'
    done
done
