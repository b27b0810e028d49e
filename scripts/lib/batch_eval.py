"""Batch evaluation throughput, for scripts/bench-clients.sh.

Usage: batch_eval.py PORT FLAG TOKEN REQUESTS USERS_PER_REQUEST
Sends REQUESTS batches of USERS_PER_REQUEST new ids each over one keep-alive connection (bodies
built before the clock starts) and prints users per second per request: median, min, max.
"""
import http.client
import json
import statistics
import sys
import time

port, flag, token = int(sys.argv[1]), sys.argv[2], sys.argv[3]
requests, size = int(sys.argv[4]), int(sys.argv[5])
bodies = [json.dumps({"users": [f"user-{r}-{i}@example.com" for i in range(size)]}).encode() for r in range(requests)]
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
headers = {"content-type": "application/json", "authorization": f"Bearer {token}"}
rates = []
for body in bodies:
    start = time.perf_counter()
    conn.request("POST", f"/flags/{flag}/evaluate", body, headers)
    reply = conn.getresponse()
    data = reply.read()
    took = time.perf_counter() - start
    if reply.status != 200:
        raise SystemExit(f"the batch answered {reply.status}: {data[:200]!r}")
    enabled = json.loads(data)["enabled"]
    assert len(enabled) == size, len(enabled)
    rates.append(size / took)
mb = len(bodies[0]) / 1e6
print(
    f"POST /flags/{flag}/evaluate, {size:,} ids ({mb:.1f} MB) per request, {requests} requests: "
    f"median {statistics.median(rates) / 1e6:.2f} M users/s (min {min(rates) / 1e6:.2f}, max {max(rates) / 1e6:.2f}), "
    f"request to last byte of the answer"
)
