#!/usr/bin/env bash
# Power-loss tests on crashfs (tools/crashfs): the WAL, the stable file, the file snapshot store,
# ringraft-kv clusters of 3 and 5 nodes and `MultiRaft` groups sharing a WAL per node (all nodes
# in one process, or each in its own losing power alone), with the power failing at chosen
# operations; plus the mutations (a WAL without fdatasync, a snapshot
# store without its directory sync) that these tests must catch. docs/POWERLOSS.md describes
# the failure model.
#
#   tools/scripts/powerloss.sh [--quick]     (root and /dev/fuse needed)
#
# --quick: 48 rounds per storage test (CI); otherwise 400 (RINGRAFT_POWERLOSS_ROUNDS overrides).
# Ends with "N passed, M failed" and the number of distinct crash points reached.
set -uo pipefail
cd "$(dirname "$0")/../.."

rounds=400
if [[ "${1:-}" == "--quick" ]]; then
    rounds=48
fi
export RINGRAFT_POWERLOSS_ROUNDS="${RINGRAFT_POWERLOSS_ROUNDS:-$rounds}"

if [[ "$(id -u)" != 0 || ! -e /dev/fuse ]]; then
    echo "powerloss.sh needs root and /dev/fuse (it mounts FUSE file systems)" >&2
    echo "0 passed, 1 failed"
    exit 1
fi
grep -qw fuse /proc/filesystems || modprobe fuse 2>/dev/null || true

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test -p ringraft-crashfs 2>&1 | tee -a "$log" || status=1
cargo test -p ringraft-tools --test powerloss_wal --test powerloss_stores --test powerloss_kv \
    --test powerloss_groups \
    -- --ignored --nocapture --test-threads=1 --skip _child 2>&1 | tee -a "$log" || status=1

sum() { grep -E '^test result:' "$log" | sed -E "s/.* ([0-9]+) $1.*/\\1/" | awk '{s+=$1} END {print s+0}'; }
passed=$(sum passed)
failed=$(sum failed)
points=$(grep -E '^powerloss: crash point ' "$log" | sed 's/^powerloss: crash point //' | sort -u | wc -l)
crashes=$(grep -cE '^powerloss: crash point ' "$log")
echo
echo "crashes: $crashes, distinct crash points reached: $points (RINGRAFT_POWERLOSS_ROUNDS=$RINGRAFT_POWERLOSS_ROUNDS)"
if [[ $status != 0 && ${failed:-0} == 0 ]]; then
    failed=1 # a build failure or a crashed test binary
fi
echo "${passed:-0} passed, ${failed:-0} failed"
[[ $status == 0 ]]
