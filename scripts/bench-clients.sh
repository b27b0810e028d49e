#!/usr/bin/env bash
# The clients' figures (docs/clients.md), each against the release build, in one run:
#   1. batch: POST /flags/{f}/evaluate with 100,000 ids per request, users per second;
#   2. rollback: 100 Rust SDK clients on replicas B and C, the flag rolled back through replica A,
#      time from the rollback request's start until each client answers false (p50/p99/max);
#   3. idle streams: two services side by side, one holding 10,000 idle GET /stream clients, the
#      other none; RSS of each, and GET /flag/{user} throughput (wrk -t1 -c64, a new user per
#      request, TOKIO_WORKER_THREADS=1 as in bench-http.sh) in interleaved rounds, as a ratio.
# The SDK's own evaluation rate: cargo run --release -p rollout-sdk --example eval_throughput.
#
# Needs wrk, redis-server, redis-cli, curl, python3. Builds the release binary and the SDK example;
# installs nothing. Raises its open-files limit to 65,536 (the 10,000 streams).
# Usage: scripts/bench-clients.sh [batch|rollback|streams|all, default all]
set -euo pipefail
source "$(dirname "$0")/lib/bench-common.sh"

WHAT=${1:-all}
ROUNDS=${ROUNDS:-5}
STREAMS=${STREAMS:-10000}
need wrk redis-server redis-cli curl python3
build_release
ulimit -n 65536
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"

batch() {
    local port
    port=$(free_port)
    start_service "$port"
    admin PUT "$port" /flags/audience '{"salt": "audience", "stages": [{"name": "half", "percent": 50}]}' >/dev/null
    admin POST "$port" /flags/audience/start >/dev/null
    echo
    python3 "$BENCH_ROOT/scripts/lib/batch_eval.py" "$port" audience "$BENCH_TOKEN" 20 100000
    stop_pid "$SERVICE_PID"
}

rollback() {
    (cd "$BENCH_ROOT" && cargo build --release --quiet -p rollout-sdk --example rollback_propagation)
    local redis_port urls=() port
    redis_port=$(free_port)
    start_redis "$redis_port"
    for _ in A B C; do
        port=$(free_port)
        start_service "$port" --redis-url "redis://127.0.0.1:$redis_port/"
        urls+=("http://127.0.0.1:$port")
    done
    port=${urls[0]##*:}
    admin PUT "$port" /flags/propagation '{"stages": [{"name": "all", "percent": 100}]}' >/dev/null
    admin POST "$port" /flags/propagation/start >/dev/null
    echo
    CLIENTS=${CLIENTS:-100} "$BENCH_ROOT/target/release/examples/rollback_propagation" "$BENCH_TOKEN" "${urls[@]}"
}

# wrk_rps PORT: requests/s of GET /flag/{user} for 4 s.
wrk_rps() {
    wrk -t1 -c64 -d4s --timeout 5s -s "$BENCH_ROOT/scripts/wrk/new-user.lua" "http://127.0.0.1:$1" -- /flag/ path |
        awk '/^RESULT / {printf "%d", $2 / $3}'
}

streams() {
    local held quiet held_pid quiet_pid holder ready="$BENCH_TMP/streams-ready"
    export TOKIO_WORKER_THREADS=${TOKIO_WORKER_THREADS:-1}
    held=$(free_port)
    start_service "$held" --max-stream-clients "$STREAMS" --max-connections $((STREAMS + 1000))
    held_pid=$SERVICE_PID
    quiet=$(free_port)
    start_service "$quiet" --max-stream-clients "$STREAMS" --max-connections $((STREAMS + 1000))
    quiet_pid=$SERVICE_PID
    for port in "$held" "$quiet"; do
        admin PUT "$port" /flags/default '{"stages": [{"name": "half", "percent": 50}]}' >/dev/null
        admin POST "$port" /flags/default/start >/dev/null
    done
    local rss_before
    rss_before=$(rss_kb "$held_pid")
    python3 "$BENCH_ROOT/scripts/lib/stream_clients.py" "$held" "$STREAMS" "$ready" &
    holder=$!
    BENCH_PIDS+=("$holder")
    for _ in $(seq 1200); do
        [[ -s $ready ]] && break
        kill -0 "$holder" 2>/dev/null || { echo "the stream clients failed" >&2; exit 1; }
        sleep 0.1
    done
    [[ -s $ready ]] || { echo "the $STREAMS streams did not open within 120 s" >&2; exit 1; }
    local open
    open=$(curl -s "http://127.0.0.1:$held/metrics" -H "authorization: Bearer $BENCH_TOKEN" |
        awk '$1 == "rollout_stream_clients" {print $2}')
    echo
    echo "$STREAMS idle streams open (the service's rollout_stream_clients: $open)"
    echo "RSS of the service: $((rss_before / 1024)) MiB before them, $(($(rss_kb "$held_pid") / 1024)) MiB with them; the other service: $(($(rss_kb "$quiet_pid") / 1024)) MiB"
    echo
    echo "| round | GET /flag/{user} rps, $STREAMS streams | rps, no stream | ratio |"
    echo "|---:|---:|---:|---:|"
    local ratios=() with without
    for ((round = 1; round <= ROUNDS; round++)); do
        with=$(wrk_rps "$held")
        without=$(wrk_rps "$quiet")
        ratios+=("$(awk -v a="$with" -v b="$without" 'BEGIN {printf "%.3f", a / b}')")
        echo "| $round | $with | $without | ${ratios[-1]} |"
    done
    printf '%s\n' "${ratios[@]}" | sort -n | awk '{r[NR] = $1} END {printf "median ratio %.3f (range %.3f to %.3f) over %d rounds\n", r[int((NR + 1) / 2)], r[1], r[NR], NR}'
    echo "RSS after the load: $(($(rss_kb "$held_pid") / 1024)) MiB with the streams, $(($(rss_kb "$quiet_pid") / 1024)) MiB without"
    kill -0 "$holder" 2>/dev/null || { echo "the stream clients ended during the load" >&2; exit 1; }
}

case $WHAT in
    batch) batch ;;
    rollback) rollback ;;
    streams) streams ;;
    all) batch; rollback; streams ;;
    *) echo "usage: $0 [batch|rollback|streams|all]" >&2; exit 2 ;;
esac
