#!/usr/bin/env bash
# Metrics ingestion against a Redis store: wrk (-t1 -c64 -d10s) POSTs {"requests": 100,
# "errors": 1} to /flags/checkout/metrics. Prints pushes/s with p50/p99, and the Redis commands
# of the run per push (from INFO commandstats): a push is one pipeline (HINCRBY per non-zero
# counter, EXPIRE), and the flag is judged (a window read: HGETALL per time bucket since the
# stage began) at most once per --push-judge-gap-ms (50 ms), however many pushes arrive.
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

redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --timeout 5s -s "$BENCH_ROOT/scripts/wrk/metrics-push.lua" \
    "http://127.0.0.1:$PORT" -- checkout "$BENCH_TOKEN")
stats=$(redis-cli -p "$REDIS_PORT" info commandstats | tr -d '\r')
read -r requests seconds p50 p99 errors <<<"$(grep '^RESULT ' <<<"$out" | cut -d' ' -f2-)"
state=$(curl -s "http://127.0.0.1:$PORT/flags/checkout/users/probe")

echo
echo "| POST /flags/{f}/metrics (wrk -t1 -c$CONNECTIONS -d$DURATION, Redis store) | pushes/s | p50 | p99 | errors |"
echo "|---|---:|---:|---:|---:|"
awk -v r="$requests" -v s="$seconds" -v p50="$p50" -v p99="$p99" -v e="$errors" \
    'BEGIN {printf "| %d pushes in %.1f s | %.0f | %.2f ms | %.2f ms | %d |\n", r, s, r / s, p50 / 1000, p99 / 1000, e}'
echo
echo "Redis commands during the run (commandstats; EVALSHA/GET/PEXPIRE are the controller lease, once a second):"
echo
echo "| command | calls | per push |"
echo "|---|---:|---:|"
awk -F'[:,=]' -v r="$requests" '/^cmdstat_/ {sub("cmdstat_", "", $1); if ($1 !~ /^(config|info)/) printf "| %s | %d | %.4f |\n", $1, $3, $3 / r}' <<<"$stats"
echo
echo "flag after the run: $state"
