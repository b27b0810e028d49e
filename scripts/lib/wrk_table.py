"""Formats interleaved wrk rounds as a Markdown table (used by bench-http.sh).

Reads lines `ROUTE|ROUND|requests seconds p50_us p99_us errors cpu_ticks clk_tck` (or
`ROUTE|ROUND|n/a`) on stdin; cpu_ticks is the service's CPU time during the run. The first route
is the floor. Per route: the median over rounds of requests/s, p50 and p99, and the median of the
per-round ratio to the floor (each round measures every route back to back, so a burst of load
from elsewhere on the machine hits a round's routes alike); the median service CPU time per
request, and the median per-round ratio of the floor's CPU per request to the route's (the
throughput ratio a fully busy service core would give).
"""

import statistics
import sys

routes, rounds = [], {}
for line in sys.stdin:
    route, rnd, rest = line.rstrip("\n").split("|")
    if route not in rounds:
        routes.append(route)
        rounds[route] = {}
    rounds[route][rnd] = None if rest == "n/a" else [float(x) for x in rest.split()]

floor = routes[0]
print("| route | requests/s | p50 | p99 | × /healthz | service CPU per request | × /healthz by CPU | errors | rounds |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for route in routes:
    runs = {r: v for r, v in rounds[route].items() if v is not None}
    if not runs:
        print(f"| `{route}` | n/a (route not present) | | | | | | | |")
        continue
    rps = {r: v[0] / v[1] for r, v in runs.items()}
    floor_rps = {r: v[0] / v[1] for r, v in rounds[floor].items() if v is not None}
    ratio = statistics.median(rps[r] / floor_rps[r] for r in rps if r in floor_rps)
    p50 = statistics.median(v[2] for v in runs.values()) / 1000
    p99 = statistics.median(v[3] for v in runs.values()) / 1000
    errors = int(sum(v[4] for v in runs.values()))
    cpu = {r: v[5] / v[6] * 1e6 / v[0] for r, v in runs.items()}
    floor_cpu = {r: v[5] / v[6] * 1e6 / v[0] for r, v in rounds[floor].items() if v is not None}
    cpu_ratio = statistics.median(floor_cpu[r] / cpu[r] for r in cpu if r in floor_cpu and cpu[r] > 0)
    print(f"| `{route}` | {statistics.median(rps.values()):.0f} | {p50:.2f} ms | {p99:.2f} ms | {ratio:.2f} | "
          f"{statistics.median(cpu.values()):.1f} µs | {cpu_ratio:.2f} | {errors} | {len(runs)} |")
