#!/usr/bin/env bash
# Resident memory (VmRSS) of the release binary: idle, with 10,000 flags (created and started
# through the API: default plan, a salt, two internal users), and after evaluation load (wrk,
# 2 × 10 s on GET /flag/{user}; equal figures mean memory stays flat under load). Once on the
# memory store (which also holds the flags' state and history in process) and once on a Redis
# store (a stateless replica: the snapshot only).
#
# HOLD_SECS=N adds a column: RSS after N more seconds with the flags running (330 fills their
# 5-minute metric windows, whose sealed buckets the Redis store keeps per flag).
#
# Needs redis-server, redis-cli, curl, python3, wrk. Builds the release binary; installs nothing.
# Usage: [HOLD_SECS=330] scripts/bench-memory.sh [flags, default 10000]
set -euo pipefail
source "$(dirname "$0")/lib/bench-common.sh"

FLAGS=${1:-10000}
HOLD_SECS=${HOLD_SECS:-0}
need redis-server redis-cli curl python3 wrk
build_release
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"

mib() {
    awk -v kb="$1" 'BEGIN {printf "%.1f MiB", kb / 1024}'
}

# measure LABEL [serve options...]: one row.
measure() {
    local label=$1
    shift
    local port
    port=$(free_port)
    start_service "$port" "$@"
    sleep 2
    local idle
    idle=$(rss_kb "$SERVICE_PID")
    local started=$SECONDS
    python3 "$BENCH_ROOT/scripts/lib/bulk_flags.py" "http://127.0.0.1:$port" "$BENCH_TOKEN" "$FLAGS"
    local took=$((SECONDS - started))
    # A few controller ticks and a full re-read of the store.
    sleep 6
    local loaded
    loaded=$(rss_kb "$SERVICE_PID")
    admin PUT "$port" /flags/default '{"stages": [{"name": "half", "percent": 50}]}' >/dev/null
    admin POST "$port" /flags/default/start >/dev/null
    local lua="$BENCH_ROOT/scripts/wrk/new-user.lua" after=()
    for _ in 1 2; do
        wrk -t1 -c64 -d10s -s "$lua" "http://127.0.0.1:$port" -- /flag/ path >/dev/null
        after+=("$(rss_kb "$SERVICE_PID")")
    done
    local held=""
    if ((HOLD_SECS > 0)); then
        sleep "$HOLD_SECS"
        held=" $(mib "$(rss_kb "$SERVICE_PID")") |"
    fi
    printf '| %s | %s | %s (created in %d s) | %s | %s |%s\n' "$label" "$(mib "$idle")" "$(mib "$loaded")" "$took" \
        "$(mib "${after[0]}")" "$(mib "${after[1]}")" "$held"
    stop_pid "$SERVICE_PID"
}

echo
if ((HOLD_SECS > 0)); then
    echo "| store | RSS idle | RSS with $FLAGS flags | + 10 s of GET /flag load | + 10 s more | + ${HOLD_SECS} s running |"
    echo "|---|---:|---:|---:|---:|---:|"
else
    echo "| store | RSS idle | RSS with $FLAGS flags | + 10 s of GET /flag load | + 10 s more |"
    echo "|---|---:|---:|---:|---:|"
fi
measure memory
REDIS_PORT=$(free_port)
start_redis "$REDIS_PORT"
measure redis --redis-url "redis://127.0.0.1:$REDIS_PORT/"
