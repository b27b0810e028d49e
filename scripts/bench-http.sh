#!/usr/bin/env bash
# HTTP hot-path benchmark, two modes; compare ratios within a round, not absolute figures: the
# machine is shared and its speed drifts.
#
# scripts/bench-http.sh [reference]  (the default) — the service against a bare axum server.
#   The reference server (benches/reference: axum 0.8, `/hello` and `/flag/{user}` with
#   MD5 and the same JSON body, the same release profile and allocator) and the service on the
#   memory store (the default flag at 50%) run side by side; every round measures, back to back,
#   reference /hello, reference /flag/{user}, rollout /healthz, rollout /flag/{user} (even rounds in
#   the reverse order) with wrk
#   -t1 -c$CONNECTIONS -d$DURATION (a new user id per request). Prints per round requests/s, p99
#   and the ratios rollout /flag ÷ reference /flag and rollout /healthz ÷ reference /hello, then
#   their median and range and the p99 differences. WORKERS (default "1 2") lists the
#   TOKIO_WORKER_THREADS settings to run in turn, every server restarted with it: 1 gives each
#   server one core and wrk the other; 2 is the default on this 2-core machine.
#
# scripts/bench-http.sh stores — every evaluation route against /healthz, on the memory store and
#   on a Redis store, and the Redis commands per request (INFO commandstats, idle then under load:
#   equal rates mean no request touched Redis). TOKIO_WORKER_THREADS (default 1) as above.
#
# Settings (environment): ROUNDS (default 5), DURATION (default 4s), CONNECTIONS (default 64).
# Needs wrk (apt-get install -y wrk), redis-server, redis-cli, curl, python3. Builds the release
# binary and the reference server; installs nothing. REFERENCE_BIN=<path> skips building the latter.
set -euo pipefail
source "$(dirname "$0")/lib/bench-common.sh"

MODE=${1:-reference}
DURATION=${DURATION:-4s}
CONNECTIONS=${CONNECTIONS:-64}
ROUNDS=${ROUNDS:-5}
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

stores_mode() {
    export TOKIO_WORKER_THREADS=${TOKIO_WORKER_THREADS:-1}
    echo "machine: $(nproc) cores, $(uptime); service: TOKIO_WORKER_THREADS=$TOKIO_WORKER_THREADS"

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
}

# reference_rows WORKERS: ROUNDS interleaved rounds of the four runs against freshly started servers.
reference_rows() {
    export TOKIO_WORKER_THREADS=$1
    local ref_port service_port ref_pid service_pid round
    ref_port=$(free_port)
    start_reference "$ref_port"
    ref_pid=$REFERENCE_PID
    service_port=$(free_port)
    start_service "$service_port"
    service_pid=$SERVICE_PID
    admin PUT "$service_port" /flags/default '{"stages": [{"name": "half", "percent": 50}]}' >/dev/null
    admin POST "$service_port" /flags/default/start >/dev/null
    ROWS=()
    local runs=(hello ref-flag healthz flag) run
    for ((round = 1; round <= ROUNDS; round++)); do
        # Odd rounds run the reference first, even rounds the service first: a machine that speeds up
        # or slows down during a round favours neither.
        if ((round % 2 == 0)); then
            runs=(flag healthz ref-flag hello)
        else
            runs=(hello ref-flag healthz flag)
        fi
        for run in "${runs[@]}"; do
            case $run in
                hello)
                    SERVICE_UNDER_TEST=$ref_pid
                    wrk_row "reference /hello" "$round" "http://127.0.0.1:$ref_port/hello" /hello fixed
                    ;;
                ref-flag)
                    SERVICE_UNDER_TEST=$ref_pid
                    wrk_row "reference /flag" "$round" "http://127.0.0.1:$ref_port" /flag/ path
                    ;;
                healthz)
                    SERVICE_UNDER_TEST=$service_pid
                    wrk_row "rollout /healthz" "$round" "http://127.0.0.1:$service_port/healthz" /healthz fixed
                    ;;
                flag)
                    SERVICE_UNDER_TEST=$service_pid
                    wrk_row "rollout /flag" "$round" "http://127.0.0.1:$service_port" /flag/ path
                    ;;
            esac
        done
    done
    stop_pid "$service_pid"
    stop_pid "$ref_pid"
}

reference_mode() {
    local workers
    build_reference
    for workers in ${WORKERS:-1 2}; do
        echo
        echo "### TOKIO_WORKER_THREADS=$workers on every server (wrk -t1 -c$CONNECTIONS -d$DURATION, a new user per request, $ROUNDS interleaved rounds)"
        echo
        echo "before: $(uptime)"
        reference_rows "$workers"
        echo "after:  $(uptime)"
        echo
        printf '%s\n' "${ROWS[@]}" | python3 "$BENCH_ROOT/scripts/lib/reference_table.py"
    done
}

case $MODE in
    reference) reference_mode ;;
    stores) stores_mode ;;
    *)
        echo "usage: scripts/bench-http.sh [reference|stores]" >&2
        exit 2
        ;;
esac
