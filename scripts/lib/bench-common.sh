# Shared by the bench scripts: start redis-server and the release binary on free loopback ports,
# wait for them, and stop everything this script started on exit. Source it; do not run it.
# Needs: redis-server, redis-cli, curl, python3 (to pick free ports). Installs nothing.

BENCH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# ROLLOUT_BIN=<path> measures another build (e.g. a saved copy of an older one) and skips the build.
BENCH_BIN="${ROLLOUT_BIN:-$BENCH_ROOT/target/release/rollout}"
BENCH_TOKEN="bench-admin-token"
BENCH_TMP="$(mktemp -d "${TMPDIR:-/tmp}/rollout-bench.XXXXXX")"
BENCH_PIDS=()

bench_cleanup() {
    local pid
    for pid in "${BENCH_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${BENCH_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$BENCH_TMP"
}
trap bench_cleanup EXIT

# need TOOL...: exits with the Debian package to install when a tool is missing.
need() {
    local tool package
    for tool in "$@"; do
        if ! command -v "$tool" >/dev/null; then
            case $tool in
                redis-cli) package=redis-tools ;;
                *) package=$tool ;;
            esac
            echo "missing: $tool (Debian: apt-get install -y $package); this script installs nothing" >&2
            exit 1
        fi
    done
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Builds the release binary (the only thing the scripts build).
build_release() {
    if [[ -z ${ROLLOUT_BIN:-} ]]; then
        (cd "$BENCH_ROOT" && cargo build --release --quiet)
    fi
}

# start_redis PORT: an empty redis-server that keeps nothing on disk.
start_redis() {
    local port=$1 dir="$BENCH_TMP/redis-$1"
    mkdir -p "$dir"
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
        --logfile "$dir/redis.log" &
    BENCH_PIDS+=($!)
    local _
    for _ in $(seq 200); do
        redis-cli -p "$port" ping >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "redis-server did not start on port $port" >&2
    exit 1
}

# start_service PORT [serve options...]: the release binary; sets SERVICE_PID.
start_service() {
    local port=$1
    shift
    ROLLOUT_ADMIN_TOKENS="bench:$BENCH_TOKEN" "$BENCH_BIN" serve --listen "127.0.0.1:$port" "$@" \
        >>"$BENCH_TMP/service-$port.log" 2>&1 &
    SERVICE_PID=$!
    BENCH_PIDS+=("$SERVICE_PID")
    local _
    for _ in $(seq 400); do
        [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" == 200 ]] && return 0
        sleep 0.05
    done
    echo "the service did not become ready on port $port; log:" >&2
    tail -20 "$BENCH_TMP/service-$port.log" >&2
    exit 1
}

# stop_pid PID: stops one process this script started.
stop_pid() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# admin METHOD PORT PATH [JSON body]
admin() {
    local method=$1 port=$2 path=$3 body=${4:-}
    curl -sS -X "$method" "http://127.0.0.1:$port$path" -H "authorization: Bearer $BENCH_TOKEN" \
        -H 'content-type: application/json' ${body:+-d "$body"} -o /dev/null -w '%{http_code}'
}

# rss_kb PID: resident set size in KiB.
rss_kb() {
    awk '/^VmRSS:/ {print $2}' "/proc/$1/status"
}

# The reference server of scripts/bench-http.sh (benches/reference, a workspace member outside
# default-members), release profile; REFERENCE_BIN=<path> uses another build and skips the build.
REFERENCE_BIN="${REFERENCE_BIN:-$BENCH_ROOT/target/release/reference-server}"

build_reference() {
    if [[ $REFERENCE_BIN == "$BENCH_ROOT/target/release/reference-server" ]]; then
        (cd "$BENCH_ROOT" && cargo build --release --quiet -p reference-server)
    fi
}

# start_reference PORT: the reference server; sets REFERENCE_PID.
start_reference() {
    local port=$1
    "$REFERENCE_BIN" "127.0.0.1:$port" >>"$BENCH_TMP/reference-$port.log" 2>&1 &
    REFERENCE_PID=$!
    BENCH_PIDS+=("$REFERENCE_PID")
    local _
    for _ in $(seq 400); do
        [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/hello")" == 200 ]] && return 0
        sleep 0.05
    done
    echo "the reference server did not start on port $port; log:" >&2
    tail -20 "$BENCH_TMP/reference-$port.log" >&2
    exit 1
}
