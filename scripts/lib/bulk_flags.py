"""Creates and starts N flags through the API, over a few keep-alive connections.

Usage: bulk_flags.py URL TOKEN N
Each flag looks like a real one: the default four-stage plan, a salt and two internal users.
"""

import http.client
import json
import sys
import threading
from urllib.parse import urlparse

WORKERS = 8


def worker(url, token, names, failures):
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    for name in names:
        body = {"salt": name, "internal_users": ["ann@example.com", "qa-bot"]}
        for method, path, payload in (("PUT", f"/flags/{name}", body), ("POST", f"/flags/{name}/start", {})):
            conn.request(method, path, body=json.dumps(payload), headers=headers)
            resp = conn.getresponse()
            resp.read()
            if not 200 <= resp.status < 300:
                failures.append(f"{method} {path}: {resp.status}")


def main():
    url, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    names = [f"flag-{i:05d}" for i in range(n)]
    failures = []
    threads = [threading.Thread(target=worker, args=(url, token, names[i::WORKERS], failures)) for i in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        sys.exit(f"{len(failures)} requests failed, e.g. {failures[0]}")


if __name__ == "__main__":
    main()
