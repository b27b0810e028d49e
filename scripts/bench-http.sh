#!/usr/bin/env bash
# HTTP hot-path benchmark: the release binary on the memory store and on a Redis store, side by side,
# measured in this one run with wrk (-t1 -c64 -d10s, a new user id per request) on
#   GET /healthz (the in-process floor), GET /flag/{user}, GET /flags/{f}/users/{u}, OFREP single.
# Both services run side by side; each round measures every route on the memory store, then on
# the Redis store, ROUNDS times (default 3); the tables show medians over the rounds: rps, p50,
# p99, and throughput relative to /healthz within each round; and the service's own CPU time per
# request (user + system, from /proc/<pid>/stat), whose ratio to /healthz's says how many more or
# fewer requests a fully busy core would serve: steadier than throughput on a noisy machine. Compare ratios,
# not absolute figures: the machine is shared. On the Redis store it also shows Redis `INFO
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
ROUNDS=${ROUNDS:-3}
export TOKIO_WORKER_THREADS=${TOKIO_WORKER_THREADS:-1}
LUA="$BENCH_ROOT/scripts/wrk/new-user.lua"
need wrk redis-server redis-cli curl python3
build_release
CLK_TCK=$(getconf CLK_TCK)

# cpu_ticks PID: the process's user + system CPU time so far, in clock ticks.
cpu_ticks() {
    awk '{print $14 + $15}' "/proc/$1/stat"
}

# wrk_row NAME ROUND URL LUA-ARGS...: one wrk run against the service SERVICE_UNDER_TEST, appended
# to the table's input with the CPU time the service spent during it.
wrk_row() {
    local name=$1 round=$2 url=$3
    shift 3
    local out before
    before=$(cpu_ticks "$SERVICE_UNDER_TEST")
    out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --timeout 5s -s "$LUA" "$url" -- "$@")
    local result
    result=$(grep '^RESULT ' <<<"$out" || true)
    if [[ -z $result ]]; then
        echo "wrk gave no result for $name:" >&2
        echo "$out" >&2
        exit 1
    fi
    ROWS+=("$name|$round|${result#RESULT } $(($(cpu_ticks "$SERVICE_UNDER_TEST") - before)) $CLK_TCK")
}

# one_round ROUND PORT PID ARRAY: every route once against one service, rows appended to ARRAY.
one_round() {
    local round=$1 base="http://127.0.0.1:$2"
    SERVICE_UNDER_TEST=$3
    local -n rows=$4
    local ofrep_path=/ofrep/v1/evaluate/flags/checkout probe
    ROWS=()
    wrk_row "GET /healthz" "$round" "$base/healthz" /healthz fixed
    wrk_row "GET /flag/{user}" "$round" "$base" /flag/ path
    wrk_row "GET /flags/{f}/users/{u}" "$round" "$base" /flags/checkout/users/ path
    probe=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$base$ofrep_path" -H 'content-type: application/json' \
        -d '{"context":{"targetingKey":"probe"}}')
    if [[ $probe == 404 ]]; then
        ROWS+=("POST /ofrep/v1/evaluate/flags/{key}|$round|n/a")
    else
        wrk_row "POST /ofrep/v1/evaluate/flags/{key}" "$round" "$base$ofrep_path" "$ofrep_path" ofrep
    fi
    rows+=("${ROWS[@]}")
}

print_store() {
    local label=$1
    shift
    echo
    echo "### $label store (wrk -t1 -c$CONNECTIONS -d$DURATION, a new user per request; medians over $ROUNDS rounds)"
    echo
    printf '%s\n' "$@" | python3 "$BENCH_ROOT/scripts/lib/wrk_table.py"
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

# Both services run side by side, idle but for the one being measured; each round measures every
# route on the memory store, then on the Redis store, so both stores see the machine alike.
MEMORY_PORT=$(free_port)
start_service "$MEMORY_PORT"
MEMORY_PID=$SERVICE_PID
seed_flags "$MEMORY_PORT"
REDIS_PORT=$(free_port)
start_redis "$REDIS_PORT"
PORT=$(free_port)
start_service "$PORT" --redis-url "redis://127.0.0.1:$REDIS_PORT/"
REDIS_SERVICE_PID=$SERVICE_PID
seed_flags "$PORT"
sleep 1
secs=${DURATION%s}
redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
sleep "$secs"
IDLE=$(commandstats "$REDIS_PORT")
redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
load_started=$(date +%s.%N)
MEMORY_ROWS=()
REDIS_ROWS=()
for ((round = 1; round <= ROUNDS; round++)); do
    one_round "$round" "$MEMORY_PORT" "$MEMORY_PID" MEMORY_ROWS
    one_round "$round" "$PORT" "$REDIS_SERVICE_PID" REDIS_ROWS
done
load_secs=$(awk -v a="$load_started" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
LOAD=$(commandstats "$REDIS_PORT")
stop_pid "$MEMORY_PID"
print_store memory "${MEMORY_ROWS[@]}"
print_store redis "${REDIS_ROWS[@]}"
ROWS=("${REDIS_ROWS[@]}")
total_requests=0
for row in "${ROWS[@]}"; do
    rest=${row##*|}
    if [[ $rest != n/a ]]; then
        total_requests=$((total_requests + ${rest%% *}))
    fi
done
echo
echo "Redis commands the Redis-store service sent (INFO commandstats): ${secs}s idle before the load, then"
echo "during the load (the rounds of both stores; requests: those of the Redis store). Only the background tasks talk to Redis: the controller (lease script: EVALSHA, GET,"
echo "PEXPIRE once a second; window reads: HGETALL per running flag and unsealed time bucket) and the resync"
echo "(SMEMBERS, HMGET every 5 s). No command is per request."
echo
echo "| command | idle ${secs}s: calls | load ${load_secs}s: calls | per request ($total_requests requests) |"
echo "|---|---:|---:|---:|"
join -a1 -a2 -e0 -o 0,1.2,2.2 <(sort <<<"$IDLE") <(sort <<<"$LOAD") | while read -r cmd idle load; do
    [[ $cmd == config* || $cmd == info* ]] && continue
    awk -v c="$cmd" -v i="$idle" -v l="$load" -v n="$total_requests" \
        'BEGIN {printf "| %s | %d | %d | %.5f |\n", c, i, l, l / n}'
done
