#!/usr/bin/env bash
# Fuzzes the live service (Redis store) with schemathesis against its own OpenAPI document:
# zero 5xx responses, zero responses that violate the document. Bounded: a few minutes.
# Usage: scripts/fuzz-api.sh [max-examples per operation, default 60]
set -euo pipefail
cd "$(dirname "$0")/.."
EXAMPLES=${1:-60}
VENV=${SCHEMATHESIS_VENV:-.venv-schemathesis}
if [[ ! -x "$VENV/bin/st" ]]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "schemathesis==4.32.5"
fi
cargo build -q --bin rollout

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work=$(mktemp -d)
redis_port=$(free_port)
app_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null 2>&1 &
redis_pid=$!
TOKEN=fuzz-admin-token
ROLLOUT_ADMIN_TOKENS="fuzz:$TOKEN" ROLLOUT_METRICS_TOKENS="metrics-token-1" ROLLOUT_ALERT_TOKENS="alert-token-1" \
ROLLOUT_CIO_SIGNING_KEYS="whsec_fuzz" ROLLOUT_CIO_DEFAULT_FLAG="checkout" ROLLOUT_DRAIN_SECS=0 RUST_LOG=warn \
    ./target/debug/rollout serve --listen "127.0.0.1:$app_port" --redis-url "redis://127.0.0.1:$redis_port/" \
    2>"$work/service.log" &
app_pid=$!
trap 'kill $app_pid $redis_pid 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
base="http://127.0.0.1:$app_port"
for _ in $(seq 100); do curl -sf "$base/readyz" >/dev/null && break; sleep 0.1; done

# A few flags in every state, so generated requests meet real ones too.
auth=(-H "authorization: Bearer $TOKEN" -H 'content-type: application/json')
for f in checkout default email pending; do curl -sf -XPUT "$base/flags/$f" "${auth[@]}" -d '{}' >/dev/null; done
for f in checkout default email; do curl -sf -XPOST "$base/flags/$f/start" "${auth[@]}" >/dev/null; done
curl -sf -XPOST "$base/flags/email/rollback" "${auth[@]}" >/dev/null

status=0
# GET /stream never ends (Server-Sent Events): each example would wait out the request timeout.
# Its events are checked by tests/api/clients.rs, its place in the document by tests/api/openapi.rs.
timeout 600 "$VENV/bin/st" run "$base/openapi.json" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
    --header "Authorization: Bearer $TOKEN" \
    --max-examples "$EXAMPLES" --request-timeout 10 --seed 20261123 \
    --exclude-path /stream \
    --generation-codec utf-8 || status=$?
if grep -qi "panicked" "$work/service.log"; then
    echo "the service panicked:" >&2
    grep -i -A5 panicked "$work/service.log" >&2
    status=1
fi
kill -0 $app_pid 2>/dev/null || { echo "the service died during the run" >&2; status=1; }
exit $status
