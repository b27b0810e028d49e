#!/usr/bin/env bash
# Instructions per request, by route, counted by callgrind (deterministic: unlike wall-clock
# figures it does not depend on what else the machine runs). The reference server
# (benches/reference: bare axum) and the release binary (memory store) run under
# valgrind in turn; after start-up, counting is switched on and each route gets N keep-alive
# requests from one curl (a new user id per request); each batch is dumped on its own. Then
# FLAGS (default 10,000) more flags are created in the service and `/flag/{user}` is counted
# again: its cost must not grow with the number of flags.
# Prints Markdown tables of instructions per request (by route, then by layer), and leaves the dumps for
# `callgrind_annotate --inclusive=yes <dump>` in the directory it names.
#
# `perf` cannot count instructions in this VM (`perf stat -e instructions true` says
# "<not supported>": no hardware counters are passed through), so callgrind is the counter.
#
# Needs valgrind (apt-get install -y valgrind), curl, python3. Builds the release binary and the
# reference server.
# Usage: scripts/profile-callgrind.sh [requests per route, default 2000]
set -euo pipefail
source "$(dirname "$0")/lib/bench-common.sh"

N=${1:-2000}
FLAGS=${FLAGS:-10000}
need valgrind callgrind_control curl python3
build_release
build_reference

OUT="${CALLGRIND_OUT:-$BENCH_ROOT/target/callgrind}"
rm -rf "$OUT"
mkdir -p "$OUT"

# under_callgrind NAME READY-PATH ENV... -- PROGRAM ARGS...: starts PROGRAM under callgrind with
# counting off, on PORT (set here), and waits until READY-PATH answers 200; sets VG.
under_callgrind() {
    local name=$1 ready=$2
    shift 2
    local env=()
    while [[ $1 != -- ]]; do
        env+=("$1")
        shift
    done
    shift
    PORT=$(free_port)
    local args=("$@")
    args=("${args[@]//@PORT@/$PORT}")
    env "${env[@]}" valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/$name.%p" \
        "${args[@]}" >"$BENCH_TMP/valgrind-$name.log" 2>&1 &
    VG=$!
    BENCH_PIDS+=("$VG")
    DUMPS=0
    for _ in $(seq 600); do
        [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT$ready")" == 200 ]] && return 0
        sleep 0.1
    done
    echo "$name did not start under valgrind; log:" >&2
    tail -20 "$BENCH_TMP/valgrind-$name.log" >&2
    exit 1
}

# batch SERVER NAME PATH-PREFIX [fixed]: N requests on one connection, counted and dumped on their own.
batch() {
    local server=$1 name=$2 prefix=$3 mode=${4:-path} conf="$BENCH_TMP/$2.curl" i
    for ((i = 0; i < N; i++)); do
        if [[ $mode == fixed ]]; then
            echo "url = \"http://127.0.0.1:$PORT$prefix\""
        else
            echo "url = \"http://127.0.0.1:$PORT${prefix}user-$i\""
        fi
        echo 'output = "/dev/null"'
    done >"$conf"
    # Warm the route, then count.
    curl -s -o /dev/null "http://127.0.0.1:$PORT${prefix}"
    callgrind_control -z "$VG" >/dev/null
    callgrind_control -i on "$VG" >/dev/null
    curl -s -K "$conf"
    callgrind_control -i off "$VG" >/dev/null
    callgrind_control -d "$name" "$VG" >/dev/null
    DUMPS=$((DUMPS + 1))
    local file ir=""
    for _ in $(seq 100); do
        file=$(ls "$OUT/$server.$VG.$DUMPS" 2>/dev/null || true)
        ir=$(awk '/^totals:/ {print $2; exit}' "$file" 2>/dev/null || true)
        [[ -n $ir ]] && break
        sleep 0.1
    done
    ROWS+=("$server $name $ir $file")
}

ROWS=()
under_callgrind reference /hello -- "$REFERENCE_BIN" "127.0.0.1:@PORT@"
batch reference hello /hello fixed
batch reference flag /flag/
stop_pid "$VG"

under_callgrind rollout /readyz "ROLLOUT_ADMIN_TOKENS=bench:$BENCH_TOKEN" -- \
    "$BENCH_BIN" serve --listen "127.0.0.1:@PORT@"
admin PUT "$PORT" /flags/default '{"stages": [{"name": "half", "percent": 50}]}' >/dev/null
admin POST "$PORT" /flags/default/start >/dev/null
admin PUT "$PORT" /flags/checkout \
    '{"salt": "checkout", "internal_users": ["ann@example.com"], "stages": [{"name": "half", "percent": 50}]}' >/dev/null
admin POST "$PORT" /flags/checkout/start >/dev/null
batch rollout healthz /healthz fixed
batch rollout flag /flag/
batch rollout flag-for-user /flags/checkout/users/
if ((FLAGS > 0)); then
    python3 "$BENCH_ROOT/scripts/lib/bulk_flags.py" "http://127.0.0.1:$PORT" "$BENCH_TOKEN" "$FLAGS" >/dev/null
    batch rollout "flag-with-$FLAGS-more-flags" /flag/
    batch rollout "flag-for-user-with-$FLAGS-more-flags" /flags/checkout/users/
fi
stop_pid "$VG"

# conn_task DUMP: instructions in the service's connection tasks (accept::serve's per-connection
# future, inclusive): the requests alone, without the background tasks (the controller ticking
# through thousands of running flags) that run meanwhile and that the dump's total includes.
conn_task() {
    callgrind_annotate --inclusive=yes "$1" 2>/dev/null |
        awk '!found && /accept::serve::\{\{closure\}\}::\{\{closure\}\}( \[.*)?$/ {gsub(",", "", $1); print $1; found = 1}'
}

echo
echo "| server | route | instructions per request | × reference | in the connection's task |"
echo "|---|---|---:|---:|---:|"
ref_hello="" ref_flag=""
LAYER_ARGS=()
for row in "${ROWS[@]}"; do
    read -r server name ir file <<<"$row"
    case $server/$name in
        reference/hello) ref_hello=$ir ;;
        reference/flag) ref_flag=$ir ;;
    esac
    case $name in
        hello | healthz) base=$ref_hello ;;
        *) base=$ref_flag ;;
    esac
    task=""
    [[ $server == rollout ]] && task=$(conn_task "$file")
    awk -v s="$server" -v n="$name" -v ir="$ir" -v N="$N" -v b="$base" -v t="$task" \
        'BEGIN {printf "| %s | %s | %.0f | %.2f | %s |\n", s, n, ir / N, ir / b, t == "" ? "" : sprintf("%.0f", t / N)}'
    [[ $name != *-more-flags ]] && LAYER_ARGS+=("$server /$name=$file")
done
echo
echo "(× reference: to the reference /hello for hello and healthz, to the reference /flag otherwise;"
echo "with $FLAGS more flags the total includes the controller working through them meanwhile: compare"
echo "the connection's task)"
echo
echo "By layer (self cost by the source file each instruction came from; scripts/lib/callgrind_layers.py):"
echo
python3 "$BENCH_ROOT/scripts/lib/callgrind_layers.py" "$N" "${LAYER_ARGS[@]}"
echo
echo "dumps (callgrind_annotate --inclusive=yes <file>):"
for row in "${ROWS[@]}"; do
    read -r server name ir file <<<"$row"
    echo "  $server $name: $file"
done
