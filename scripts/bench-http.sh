#!/usr/bin/env bash
# HTTP hot-path benchmark: the release binary on the memory store, then on a Redis store, each
# measured in this one run with wrk (-t1 -c64 -d10s, a new user id per request) on
#   GET /flag/{user}, GET /flags/{f}/users/{u}, OFREP single evaluation, and GET /healthz (the floor).
# Prints a Markdown table: rps, p50, p99, throughput relative to /healthz. Compare ratios, not
# absolute figures: the machine is shared. On the Redis store it also shows Redis `INFO
# commandstats` for an idle period and for the load period (same length): equal rates mean no
# request touched Redis.
#
# wrk runs one thread, so it takes one of this machine's two cores; the service gets the other
# (TOKIO_WORKER_THREADS=1, tokio's own setting) so that the two do not preempt each other, as
# they would not in production. TOKIO_WORKER_THREADS=2 scripts/bench-http.sh measures the
# default instead (one worker per core: both cores shared with wrk).
#
# Needs wrk (apt-get install -y wrk), redis-server, redis-cli, curl, python3. Builds the release
# binary; installs nothing.
# Usage: scripts/bench-http.sh [duration, default 10s] [connections, default 64]
set -euo pipefail
source "$(dirname "$0")/lib/bench-common.sh"

DURATION=${1:-10s}
CONNECTIONS=${2:-64}
export TOKIO_WORKER_THREADS=${TOKIO_WORKER_THREADS:-1}
LUA="$BENCH_ROOT/scripts/wrk/new-user.lua"
need wrk redis-server redis-cli curl python3
build_release

# wrk_row NAME URL LUA-ARGS...: one wrk run, appended to the table as a row.
wrk_row() {
    local name=$1 url=$2
    shift 2
    local out
    out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --timeout 5s -s "$LUA" "$url" -- "$@")
    local result
    result=$(grep '^RESULT ' <<<"$out" || true)
    if [[ -z $result ]]; then
        echo "wrk gave no result for $name:" >&2
        echo "$out" >&2
        exit 1
    fi
    ROWS+=("$name|${result#RESULT }")
}

# run_store LABEL PORT: the four rows against one running service.
run_store() {
    local label=$1 port=$2 base="http://127.0.0.1:$2"
    ROWS=()
    wrk_row "GET /healthz" "$base/healthz" /healthz fixed
    wrk_row "GET /flag/{user}" "$base" /flag/ path
    wrk_row "GET /flags/{f}/users/{u}" "$base" /flags/checkout/users/ path
    local ofrep_path=/ofrep/v1/evaluate/flags/checkout
    local probe
    probe=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$base$ofrep_path" -H 'content-type: application/json' \
        -d '{"context":{"targetingKey":"probe"}}')
    if [[ $probe == 404 ]]; then
        ROWS+=("POST /ofrep/v1/evaluate/flags/{key}|n/a")
    else
        wrk_row "POST /ofrep/v1/evaluate/flags/{key}" "$base$ofrep_path" "$ofrep_path" ofrep
    fi
    print_table "$label"
}

print_table() {
    local label=$1 floor_rps="" row
    echo
    echo "### $label store (wrk -t1 -c$CONNECTIONS -d$DURATION, a new user per request)"
    echo
    echo "| route | requests/s | p50 | p99 | × /healthz | errors |"
    echo "|---|---:|---:|---:|---:|---:|"
    for row in "${ROWS[@]}"; do
        local name=${row%%|*} rest=${row#*|}
        if [[ $rest == n/a ]]; then
            echo "| \`$name\` | n/a (route not present) | | | | |"
            continue
        fi
        read -r requests seconds p50 p99 errors <<<"$rest"
        local rps
        rps=$(awk -v r="$requests" -v s="$seconds" 'BEGIN {printf "%.0f", r / s}')
        floor_rps=${floor_rps:-$rps}
        awk -v n="$name" -v rps="$rps" -v p50="$p50" -v p99="$p99" -v f="$floor_rps" -v e="$errors" \
            'BEGIN {printf "| `%s` | %d | %.2f ms | %.2f ms | %.2f | %d |\n", n, rps, p50 / 1000, p99 / 1000, rps / f, e}'
    done
}

# The same two flags on each store: the default flag at 50%, a salted flag with internal users.
seed_flags() {
    local port=$1
    admin PUT "$port" /flags/default '{"stages": [{"name": "half", "percent": 50}]}' >/dev/null
    admin POST "$port" /flags/default/start >/dev/null
    admin PUT "$port" /flags/checkout \
        '{"salt": "checkout", "internal_users": ["ann@example.com"], "stages": [{"name": "half", "percent": 50}]}' >/dev/null
    admin POST "$port" /flags/checkout/start >/dev/null
}

commandstats() {
    redis-cli -p "$1" info commandstats | tr -d '\r' | awk -F'[:,=]' '/^cmdstat_/ {sub("cmdstat_", "", $1); print $1, $3}'
}

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); service: TOKIO_WORKER_THREADS=$TOKIO_WORKER_THREADS"

# Memory store.
PORT=$(free_port)
start_service "$PORT"
seed_flags "$PORT"
run_store memory "$PORT"
stop_pid "$SERVICE_PID"

# Redis store.
REDIS_PORT=$(free_port)
start_redis "$REDIS_PORT"
PORT=$(free_port)
start_service "$PORT" --redis-url "redis://127.0.0.1:$REDIS_PORT/"
seed_flags "$PORT"
sleep 1
secs=${DURATION%s}
redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
sleep "$secs"
IDLE=$(commandstats "$REDIS_PORT")
redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
load_started=$(date +%s.%N)
run_store redis "$PORT"
load_secs=$(awk -v a="$load_started" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
LOAD=$(commandstats "$REDIS_PORT")
total_requests=0
for row in "${ROWS[@]}"; do
    rest=${row#*|}
    if [[ $rest != n/a ]]; then
        total_requests=$((total_requests + ${rest%% *}))
    fi
done
echo
echo "Redis commands the service sent (INFO commandstats): ${secs}s idle before the load, then during the"
echo "load. Only the background tasks talk to Redis: the controller (lease script: EVALSHA, GET,"
echo "PEXPIRE once a second; window reads: HGETALL per running flag and time bucket) and the resync"
echo "(SMEMBERS, HMGET every 5 s). No command is per request."
echo
echo "| command | idle ${secs}s: calls | load ${load_secs}s: calls | per request ($total_requests requests) |"
echo "|---|---:|---:|---:|"
join -a1 -a2 -e0 -o 0,1.2,2.2 <(sort <<<"$IDLE") <(sort <<<"$LOAD") | while read -r cmd idle load; do
    [[ $cmd == config* || $cmd == info* ]] && continue
    awk -v c="$cmd" -v i="$idle" -v l="$load" -v n="$total_requests" \
        'BEGIN {printf "| %s | %d | %d | %.5f |\n", c, i, l, l / n}'
done
