#!/usr/bin/env bash
# Instructions per request, by route, counted by callgrind (deterministic: unlike wall-clock
# figures it does not depend on what else the machine runs). The release binary runs under
# valgrind on the memory store; after start-up, counting is switched on and each route gets N
# keep-alive requests from one curl (a new user id per request); each batch is dumped on its own.
# Prints a Markdown table of instructions per request, and leaves the dumps for
# callgrind_annotate in the directory it names.
#
# Needs valgrind (apt-get install -y valgrind), curl, python3. Builds the release binary.
# Usage: scripts/profile-callgrind.sh [requests per route, default 2000]
set -euo pipefail
source "$(dirname "$0")/lib/bench-common.sh"

N=${1:-2000}
need valgrind callgrind_control curl python3
build_release

OUT="$BENCH_ROOT/target/callgrind"
rm -rf "$OUT"
mkdir -p "$OUT"
PORT=$(free_port)
ROLLOUT_ADMIN_TOKENS="bench:$BENCH_TOKEN" valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$OUT/callgrind.out.%p" "$BENCH_BIN" serve --listen "127.0.0.1:$PORT" \
    >"$BENCH_TMP/valgrind.log" 2>&1 &
VG=$!
BENCH_PIDS+=("$VG")
for _ in $(seq 600); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/readyz")" == 200 ]] && break
    sleep 0.1
done
admin PUT "$PORT" /flags/default '{"stages": [{"name": "half", "percent": 50}]}' >/dev/null
admin POST "$PORT" /flags/default/start >/dev/null
admin PUT "$PORT" /flags/checkout \
    '{"salt": "checkout", "internal_users": ["ann@example.com"], "stages": [{"name": "half", "percent": 50}]}' >/dev/null
admin POST "$PORT" /flags/checkout/start >/dev/null

# batch NAME PATH-PREFIX [fixed]: N requests on one connection, counted and dumped on their own.
batch() {
    local name=$1 prefix=$2 mode=${3:-path} conf="$BENCH_TMP/$1.curl" i
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
    local file="$OUT/callgrind.out.$VG.$DUMPS" ir=""
    for _ in $(seq 100); do
        ir=$(awk '/^totals:/ {print $2; exit}' "$file" 2>/dev/null || true)
        [[ -n $ir ]] && break
        sleep 0.1
    done
    ROWS+=("$name $ir $file")
}

ROWS=()
DUMPS=0
batch healthz /healthz fixed
batch flag /flag/
batch flag-for-user /flags/checkout/users/
echo
echo "| route | instructions per request | × /healthz |"
echo "|---|---:|---:|"
floor=""
for row in "${ROWS[@]}"; do
    read -r name ir file <<<"$row"
    floor=${floor:-$ir}
    awk -v n="$name" -v ir="$ir" -v N="$N" -v f="$floor" 'BEGIN {printf "| %s | %.0f | %.2f |\n", n, ir / N, ir / f}'
done
echo
echo "dumps (callgrind_annotate --inclusive=yes <file>):"
for row in "${ROWS[@]}"; do
    read -r name ir file <<<"$row"
    echo "  $name: $file"
done
