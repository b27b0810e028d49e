"""Formats the interleaved rounds of `scripts/bench-http.sh reference` as Markdown tables.

Reads lines `SERVER ROUTE|ROUND|requests seconds p50_us p99_us errors cpu_ticks clk_tck` on stdin
(cpu_ticks: the measured server's CPU time during the run). Prints one row per round (requests/s
and p99 of the four runs, the two throughput ratios, the two p99 differences), then the median and
range over the rounds of each, and the ratios by CPU time per request (the throughput ratio a
fully busy core would give). Every ratio is taken within a round: the four runs of a round are
back to back, so a burst of load from elsewhere on the machine hits them alike.
"""

import statistics
import sys

HELLO, REF, HEALTHZ, FLAG = "reference /hello", "reference /flag", "rollout /healthz", "rollout /flag"

runs = {}
for line in sys.stdin:
    name, rnd, rest = line.rstrip("\n").split("|")
    requests, seconds, p50, p99, errors, ticks, clk_tck = (float(x) for x in rest.split())
    runs[(name, int(rnd))] = {
        "rps": requests / seconds,
        "p99": p99 / 1000,
        "errors": errors,
        "cpu_us": ticks / clk_tck * 1e6 / requests,
    }

rounds = sorted({r for _, r in runs})
rows = []
for r in rounds:
    get = lambda name: runs[(name, r)]  # noqa: E731
    rows.append(
        {
            "round": r,
            "hello": get(HELLO),
            "ref": get(REF),
            "healthz": get(HEALTHZ),
            "flag": get(FLAG),
            "flag_ratio": get(FLAG)["rps"] / get(REF)["rps"],
            "healthz_ratio": get(HEALTHZ)["rps"] / get(HELLO)["rps"],
            "flag_p99_diff": get(FLAG)["p99"] - get(REF)["p99"],
            "healthz_p99_diff": get(HEALTHZ)["p99"] - get(HELLO)["p99"],
            "flag_cpu_ratio": get(REF)["cpu_us"] / get(FLAG)["cpu_us"] if get(FLAG)["cpu_us"] else float("nan"),
            "healthz_cpu_ratio": get(HELLO)["cpu_us"] / get(HEALTHZ)["cpu_us"] if get(HEALTHZ)["cpu_us"] else float("nan"),
            "errors": sum(get(n)["errors"] for n in (HELLO, REF, HEALTHZ, FLAG)),
        }
    )

print("| round | reference /hello | reference /flag | rollout /healthz | rollout /flag | "
      "/flag ÷ ref /flag | /healthz ÷ ref /hello | p99: ref /hello, ref /flag, /healthz, /flag | "
      "p99 /flag − ref /flag | errors |")
print("|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
for row in rows:
    print(
        f"| {row['round']} | {row['hello']['rps']:.0f} | {row['ref']['rps']:.0f} | {row['healthz']['rps']:.0f} | "
        f"{row['flag']['rps']:.0f} | **{row['flag_ratio']:.2f}** | **{row['healthz_ratio']:.2f}** | "
        f"{row['hello']['p99']:.2f} / {row['ref']['p99']:.2f} / {row['healthz']['p99']:.2f} / "
        f"{row['flag']['p99']:.2f} ms | {row['flag_p99_diff']:+.2f} ms | {row['errors']:.0f} |"
    )


def summary(key, unit=""):
    values = [row[key] for row in rows]
    fmt = (lambda v: f"{v:+.2f}{unit}") if unit else (lambda v: f"{v:.2f}")
    return f"{fmt(statistics.median(values))} ({fmt(min(values))} – {fmt(max(values))})"


print()
print(f"| over {len(rows)} rounds: median (range) | target | |")
print("|---|---|---|")
print(f"| rollout `/flag` ÷ reference `/flag`, requests/s | **{summary('flag_ratio')}** | ≥ 0.85 |")
print(f"| rollout `/healthz` ÷ reference `/hello`, requests/s | **{summary('healthz_ratio')}** | ≥ 0.90 |")
print(f"| p99 rollout `/flag` − reference `/flag` | **{summary('flag_p99_diff', ' ms')}** | ≤ +0.30 ms |")
print(f"| p99 rollout `/healthz` − reference `/hello` | {summary('healthz_p99_diff', ' ms')} | |")
print(f"| by CPU time per request: reference `/flag` ÷ rollout `/flag` | {summary('flag_cpu_ratio')} | |")
print(f"| by CPU time per request: reference `/hello` ÷ rollout `/healthz` | {summary('healthz_cpu_ratio')} | |")
