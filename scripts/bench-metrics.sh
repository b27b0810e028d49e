#!/usr/bin/env bash
# Metrics ingestion against a Redis store: wrk (-t1 -c64 -d10s, then -c2 for a lower rate) POSTs
# {"requests": 100, "errors": 1} to /flags/checkout/metrics. Prints pushes/s with p50/p99, and the
# Redis commands of each run (INFO commandstats): a push is one pipeline (HINCRBY per non-zero
# counter, EXPIRE), and the flag is judged (a window read: HGETALL per time bucket of the stage
# that may still change; sealed buckets are fetched once) at most once per --push-judge-gap-ms (50 ms), however many pushes arrive.
#
# Needs wrk (apt-get install -y wrk), redis-server, redis-cli, curl, python3. Builds the release
# binary; installs nothing.
# Usage: scripts/bench-metrics.sh [duration, default 10s] [connections, default 64]
set -euo pipefail
source "$(dirname "$0")/lib/bench-common.sh"

DURATION=${1:-10s}
CONNECTIONS=${2:-64}
need wrk redis-server redis-cli curl python3
build_release
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"

REDIS_PORT=$(free_port)
start_redis "$REDIS_PORT"
PORT=$(free_port)
start_service "$PORT" --redis-url "redis://127.0.0.1:$REDIS_PORT/"
# Soaks of a day: nothing advances during the run; the healthy samples never roll back.
admin PUT "$PORT" /flags/checkout \
    '{"stages": [{"name": "ten", "percent": 10, "soak_secs": 86400}, {"name": "all", "percent": 100, "soak_secs": 86400}]}' \
    >/dev/null
admin POST "$PORT" /flags/checkout/start >/dev/null

# measure CONNECTIONS: one wrk run; one table row from its result and the Redis commandstats.
measure() {
    local connections=$1
    redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
    local out stats
    out=$(wrk -t1 -c"$connections" -d"$DURATION" --timeout 5s -s "$BENCH_ROOT/scripts/wrk/metrics-push.lua" \
        "http://127.0.0.1:$PORT" -- checkout "$BENCH_TOKEN")
    stats=$(redis-cli -p "$REDIS_PORT" info commandstats | tr -d '\r')
    local requests seconds p50 p99 errors
    read -r requests seconds p50 p99 errors <<<"$(grep '^RESULT ' <<<"$out" | cut -d' ' -f2-)"
    calls() {
        awk -F'[:,=]' -v c="cmdstat_$1" '$1 == c {print $3; found = 1} END {if (!found) print 0}' <<<"$stats"
    }
    awk -v c="$connections" -v r="$requests" -v s="$seconds" -v p50="$p50" -v p99="$p99" -v e="$errors" \
        -v hincrby="$(calls hincrby)" -v expire="$(calls expire)" -v hgetall="$(calls hgetall)" \
        'BEGIN {printf "| %d | %.0f | %.2f ms | %.2f ms | %.3f HINCRBY + %.3f EXPIRE | %.0f | %d |\n",
            c, r / s, p50 / 1000, p99 / 1000, hincrby / r, expire / r, hgetall / s, e}'
}

echo
echo "| connections | pushes/s | p50 | p99 | Redis commands per push (one pipeline) | HGETALL/s (window reads) | errors |"
echo "|---:|---:|---:|---:|---|---:|---:|"
measure "$CONNECTIONS"
measure 2
echo
echo "HGETALL/s counts the window reads of the push judgements (at most one per 50 ms, one HGETALL per"
echo "5-second bucket of the stage that may still change: the stage is seconds old here, so that is"
echo "every bucket since it began) and of the controller tick (once a second): it does not follow the"
echo "push rate."
echo
echo "flag after the runs: $(curl -s "http://127.0.0.1:$PORT/flags/checkout/users/probe")"
