"""Change propagation across replicas: how long until every replica answers a change made through one.

Usage: propagation.py ROUNDS TOKEN URL_A URL_B URL_C

Each round, through replica A: advance the flag (10% -> 50%) and poll every replica until all
answer 50%; roll it back and poll until all answer 0%; resume (back to 10%, not measured). The
clock starts just before the change is sent to A and stops when the last replica answers the new
state. Polls use one keep-alive connection per replica, in turn (one poll takes ~0.1-0.3 ms).
Prints a Markdown table of p50, p99 and max per change.
"""

import http.client
import json
import math
import sys
import time
from urllib.parse import urlparse


class Replica:
    def __init__(self, url, token):
        u = urlparse(url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
        self.token = token

    def request(self, method, path, body=None):
        headers = {"authorization": f"Bearer {self.token}", "content-type": "application/json"}
        self.conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        resp = self.conn.getresponse()
        data = resp.read()
        if not 200 <= resp.status < 300:
            raise RuntimeError(f"{method} {path}: {resp.status} {data!r}")
        return json.loads(data)

    def answer(self, flag):
        return self.request("GET", f"/flags/{flag}/users/probe")


def wait_all(replicas, flag, version, percent, limit=5.0):
    """Polls until every replica serves `version` (which has `percent`); returns the instant it did."""
    pending = list(replicas)
    deadline = time.perf_counter() + limit
    while pending:
        r = pending[0]
        a = r.answer(flag)
        if a["version"] >= version:
            if a["percent"] != percent:
                raise RuntimeError(f"version {a['version']} answers {a['percent']}%, expected {percent}%")
            pending.pop(0)
        else:
            pending.append(pending.pop(0))
        if time.perf_counter() > deadline:
            raise RuntimeError(f"replicas did not agree on version {version} within {limit} s")
    return time.perf_counter()


def change(a, replicas, flag, command, percent):
    started = time.perf_counter()
    state = a.request("POST", f"/flags/{flag}/{command}", {"reason": "propagation bench"})
    return wait_all(replicas, flag, state["version"], percent) - started


def quantile(sorted_values, q):
    """Nearest rank: the smallest value with at least q of all values at or below it."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def main():
    rounds, token, urls = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    replicas = [Replica(u, token) for u in urls]
    a = replicas[0]
    flag = "propagation"
    # Soaks of a day: the controller never advances the flag by itself during the run.
    stages = [{"name": "ten", "percent": 10, "soak_secs": 86400}, {"name": "fifty", "percent": 50, "soak_secs": 86400}]
    a.request("PUT", f"/flags/{flag}", {"stages": stages})
    state = a.request("POST", f"/flags/{flag}/start", {})
    wait_all(replicas, flag, state["version"], 10)
    times = {"advance": [], "rollback": []}
    for _ in range(rounds):
        times["advance"].append(change(a, replicas, flag, "advance", 50))
        times["rollback"].append(change(a, replicas, flag, "rollback", 0))
        change(a, replicas, flag, "resume", 10)
    print(f"| change (through A; B and C on the change feed) | rounds | p50 | p99 | max |")
    print("|---|---:|---:|---:|---:|")
    for name, values in times.items():
        v = sorted(values)
        ms = lambda x: f"{x * 1000:.2f} ms"
        print(f"| {name} until all {len(replicas)} replicas agree | {len(v)} | {ms(quantile(v, 0.5))} | "
              f"{ms(quantile(v, 0.99))} | {ms(v[-1])} |")


if __name__ == "__main__":
    main()
