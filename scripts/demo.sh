#!/usr/bin/env bash
# A one-minute rollout: auto-advance through a 4-stage plan on healthy metrics, then a guard
# rollback. Starts its own service (in-memory store) on 127.0.0.1:18080 unless URL is set.
set -euo pipefail
URL=${URL:-http://127.0.0.1:18080}
T=${T:-demo-admin-token}
if [[ -z "${KEEP_SERVER:-}" ]]; then
    cargo build -q --release
    ROLLOUT_ADMIN_TOKENS="demo:$T" ./target/release/rollout serve --listen "${URL#http://}" 2>/tmp/rollout-demo.log &
    server=$!
    trap 'kill $server' EXIT
    for _ in $(seq 50); do curl -sf "$URL/readyz" >/dev/null && break; sleep 0.1; done
fi
auth=(-H "authorization: Bearer $T" -H 'content-type: application/json')

curl -s -XPUT "$URL/flags/demo" "${auth[@]}" -d '{
  "internal_users": ["ann@example.com"], "min_samples": 10, "window_secs": 10,
  "stages": [
    {"name": "internal", "internal_only": true, "soak_secs": 10},
    {"name": "10%", "percent": 10, "soak_secs": 10},
    {"name": "50%", "percent": 50, "soak_secs": 10},
    {"name": "100%", "percent": 100, "soak_secs": 10}
  ]}' >/dev/null
curl -s -XPOST "$URL/flags/demo/start" "${auth[@]}" >/dev/null
for second in $(seq 45); do
    # The app reports healthy traffic every second.
    curl -s -XPOST "$URL/flags/demo/metrics" "${auth[@]}" -d '{"requests": 500, "errors": 1}' >/dev/null
    state=$(curl -s "$URL/flags/demo" "${auth[@]}")
    printf '%2ds  %s\n' "$second" "$(echo "$state" | python3 -c 'import json,sys; f=json.load(sys.stdin); print(f["status"], f["stage"], str(f["percent"])+"%")')"
    [[ "$state" == *'"status":"completed"'* ]] && break
    sleep 1
done

echo "--- the same flag again: resume is refused (completed); roll back, resume, then a bad push"
curl -s -XPOST "$URL/flags/demo/rollback" "${auth[@]}" -d '{"reason": "demo"}' >/dev/null
curl -s -XPOST "$URL/flags/demo/resume" "${auth[@]}" | python3 -c 'import json,sys; f=json.load(sys.stdin); print("resumed at", f["stage"])'
curl -s -XPOST "$URL/flags/demo/metrics" "${auth[@]}" -d '{"requests": 100, "errors": 10}'
echo
curl -s "$URL/flags/demo/history?limit=3" "${auth[@]}" |
    python3 -c 'import json,sys; [print(e["at"], e["action"], e["actor"], "-", e["reason"]) for e in json.load(sys.stdin)["events"]]'
