#!/usr/bin/env bash
# Change propagation: three replicas (release binary) on one redis-server; through replica A,
# 100 times: advance the flag and roll it back; after each change, poll every replica until all
# answer it. Prints p50/p99/max of the time until all replicas agree.
#
# Needs redis-server, redis-cli, curl, python3. Builds the release binary; installs nothing.
# Usage: scripts/bench-propagation.sh [rounds, default 100]
set -euo pipefail
source "$(dirname "$0")/lib/bench-common.sh"

ROUNDS=${1:-100}
need redis-server redis-cli curl python3
build_release
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"

REDIS_PORT=$(free_port)
start_redis "$REDIS_PORT"
URLS=()
for _ in A B C; do
    port=$(free_port)
    start_service "$port" --redis-url "redis://127.0.0.1:$REDIS_PORT/"
    URLS+=("http://127.0.0.1:$port")
done
echo
python3 "$BENCH_ROOT/scripts/lib/propagation.py" "$ROUNDS" "$BENCH_TOKEN" "${URLS[@]}"
