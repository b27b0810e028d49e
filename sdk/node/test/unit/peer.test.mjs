// The client against a scripted HTTP peer speaking the wire contract (docs/clients.md): what it
// sends (Last-Event-ID, If-None-Match, tokens) and how it reacts to what the service can do
// (drops, silence, refusals, bad events). The real service is in test/wire/.
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { test } from "node:test";

import { Client } from "../../dist/index.js";

const quiet = { warn() {} };

/** A peer; `handle(request, index, response)` answers each request. Resolves to {url, requests, close}. */
async function peer(handle) {
  const requests = [];
  // Each request's connection (numbered in the order they came) and how many came on it before.
  const connections = new WeakMap();
  let opened = 0;
  const server = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      const seen = connections.get(req.socket) ?? { id: opened++, requests: 0 };
      connections.set(req.socket, { id: seen.id, requests: seen.requests + 1 });
      const on = { connection: seen.id, earlierOnConnection: seen.requests };
      const request = { method: req.method, path: req.url, headers: req.headers, body, ...on };
      requests.push(request);
      handle(request, requests.filter((r) => r.path === req.url).length - 1, res);
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests: (path) => requests.filter((r) => r.path === path),
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

async function eventually(what, check, limitMs = 5_000) {
  const start = performance.now();
  while (!(await check())) {
    if (performance.now() - start > limitMs) throw new Error(`${what}: not met within ${limitMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

const flag = (version, extra = {}) => ({
  name: "f",
  version,
  status: "running",
  stage: "100%",
  percent: 100,
  salt: null,
  internal_users_sha256: [],
  ...extra,
});

function sse(res, events, { end = true, pieceBytes = 0 } = {}) {
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
  const text = events.map(([event, id, data]) => `event: ${event}\nid: ${id}\ndata: ${JSON.stringify(data)}\n\n`).join("");
  const bytes = Buffer.from(text);
  // Tiny pieces: the parser sees the stream cut anywhere, through a real socket.
  const step = pieceBytes || bytes.length;
  for (let i = 0; i < bytes.length; i += step) res.write(bytes.subarray(i, i + step));
  if (end) res.end();
}

test("the stream drives the answers, and a reconnection resumes after the last id", async () => {
  const p = await peer((req, n, res) => {
    if (req.path !== "/stream") return res.writeHead(404).end();
    if (n === 0) return sse(res, [["snapshot", "10", { flags: [flag(1)] }], ["change", "11", flag(2)]], { pieceBytes: 7 });
    sse(res, [["change", "12", flag(3, { status: "rolled_back", percent: 0 })]], { end: false });
  });
  const client = await Client.create(p.url, { token: "read-tok", reconnectBaseMs: 10, logger: quiet });
  try {
    await eventually("the rollback after the reconnection", () => client.evaluation("f", "u1").reason === "flag_off");
    assert.equal(client.flag("f").version, 3);
    assert.equal(client.isConnected(), true);
    const [first, second] = p.requests("/stream");
    assert.equal(first.headers["last-event-id"], undefined);
    assert.equal(first.headers.authorization, "Bearer read-tok");
    assert.equal(first.headers.accept, "text/event-stream");
    assert.equal(second.headers["last-event-id"], "11", "resumes after the last event it applied");
  } finally {
    await client.close();
    await p.close();
  }
});

test("a stream that is refused falls back to the configuration route, with If-None-Match", async () => {
  let body = { flags: [flag(1)] };
  let etag = '"v1"';
  const p = await peer((req, n, res) => {
    if (req.path === "/stream") return res.writeHead(503, { "content-type": "application/json" }).end('{"error":"too_many_stream_clients"}');
    if (req.headers["if-none-match"] === etag) return res.writeHead(304, { etag }).end();
    res.writeHead(200, { "content-type": "application/json", etag }).end(JSON.stringify(body));
  });
  const client = await Client.create(p.url, { reconnectBaseMs: 10, reconnectMaxMs: 20, logger: quiet });
  try {
    assert.equal(client.isReady(), true);
    assert.equal(client.isConnected(), false);
    assert.equal(client.isEnabled("f", "u1"), true);
    await eventually("an unchanged configuration is asked with its ETag", () =>
      p.requests("/flags/config").some((r) => r.headers["if-none-match"] === '"v1"'),
    );
    body = { flags: [flag(2, { status: "rolled_back", percent: 0 })] };
    etag = '"v2"';
    await eventually("the changed configuration is taken", () => client.flag("f")?.version === 2);
    assert.equal(client.isEnabled("f", "u1"), false);
  } finally {
    await client.close();
    await p.close();
  }
});

test("a silent stream is dropped after the idle timeout and reopened with its last id", async () => {
  const p = await peer((req, n, res) => sse(res, [["snapshot", String(100 + n), { flags: [flag(1 + n)] }]], { end: false }));
  const client = await Client.create(p.url, { streamIdleTimeoutMs: 200, reconnectBaseMs: 10, logger: quiet });
  try {
    await eventually("a second stream after 200 ms of silence", () => p.requests("/stream").length >= 2);
    assert.equal(p.requests("/stream")[1].headers["last-event-id"], "100");
    await eventually("its snapshot applied", () => client.flag("f")?.version === 2);
  } finally {
    await client.close();
    await p.close();
  }
});

test("an event that cannot be applied is skipped by resynchronizing: no Last-Event-ID", async () => {
  const p = await peer((req, n, res) => {
    if (n === 0) return sse(res, [["snapshot", "1", { flags: [flag(1)] }], ["change", "2", { name: "f", percent: "lots" }]], { end: false });
    sse(res, [["snapshot", "3", { flags: [flag(5)] }]], { end: false });
  });
  const client = await Client.create(p.url, { reconnectBaseMs: 10, logger: quiet });
  try {
    await eventually("a fresh snapshot", () => client.flag("f")?.version === 5);
    assert.equal(p.requests("/stream")[1].headers["last-event-id"], undefined);
  } finally {
    await client.close();
    await p.close();
  }
});

test("reports are pushed by cohort, retried while the service fails, merged, and land once", async () => {
  let failures = 2;
  const p = await peer((req, n, res) => {
    if (req.path === "/stream") return sse(res, [["snapshot", "1", { flags: [flag(1, { percent: 50 })] }]], { end: false });
    if (req.path.endsWith("/metrics") && failures > 0) {
      failures -= 1;
      return res.writeHead(failures === 1 ? 503 : 429).end();
    }
    res.writeHead(202, { "content-type": "application/json" }).end("{}");
  });
  const client = await Client.create(p.url, { token: "read-tok", metricsToken: "metrics-tok", reportIntervalMs: 30, logger: quiet });
  try {
    const users = Array.from({ length: 200 }, (_, i) => `user-${i}`);
    const treatment = users.filter((u) => client.isEnabled("f", u)).length;
    for (const [i, user] of users.entries()) client.record("f", user, { error: i < 3, latencyMs: 10 });
    await eventually("both cohorts accepted", () => p.requests("/flags/f/metrics").length >= 4);
    await client.close();
    const accepted = p.requests("/flags/f/metrics").slice(2).map((r) => JSON.parse(r.body));
    const byCohort = Object.fromEntries(accepted.map((b) => [b.cohort, b]));
    assert.equal(byCohort.treatment.requests, treatment);
    assert.equal(byCohort.control.requests, users.length - treatment);
    assert.equal(byCohort.treatment.errors + byCohort.control.errors, 3);
    assert.ok(Math.abs(byCohort.control.p99_latency_ms - 10) < 0.3, JSON.stringify(byCohort.control));
    assert.equal(p.requests("/flags/f/metrics")[0].headers.authorization, "Bearer metrics-tok");
    assert.equal(client.droppedReports(), 0);
  } finally {
    await client.close();
    await p.close();
  }
});

test("reports the service cannot take for reportMaxAgeMs are dropped and counted; record never waits", async () => {
  const p = await peer((req, n, res) => {
    if (req.path === "/stream") return sse(res, [["snapshot", "1", { flags: [flag(1)] }]], { end: false });
    res.writeHead(503).end();
  });
  const client = await Client.create(p.url, { reportIntervalMs: 20, reportMaxAgeMs: 150, logger: quiet });
  try {
    const start = performance.now();
    for (let i = 0; i < 1000; i++) client.record("f", `user-${i}`, {});
    assert.ok(performance.now() - start < 500, "record is in memory only");
    await eventually("the outcomes are dropped after 150 ms of refusals", () => client.droppedReports() === 1000);
    assert.ok(p.requests("/flags/f/metrics").length >= 3, "retried meanwhile");
  } finally {
    await client.close();
    await p.close();
  }
});

test("each stream opens its own connection while reports keep theirs", async () => {
  // Each stream ends after its snapshot, so the client keeps reconnecting while it reports.
  const p = await peer((req, n, res) => {
    if (req.path === "/stream") return sse(res, [["snapshot", "1", { flags: [flag(1)] }]]);
    res.writeHead(202, { "content-type": "application/json" }).end("{}");
  });
  const client = await Client.create(p.url, { reconnectBaseMs: 10, reconnectMaxMs: 50, reportIntervalMs: 20, logger: quiet });
  try {
    for (let i = 0; i < 100; i++) {
      client.record("f", `user-${i}`, {});
      await new Promise((resolve) => setTimeout(resolve, 3));
    }
    await eventually("several streams, and reports on a kept-alive connection", () => {
      const reused = p.requests("/flags/f/metrics").some((r) => r.earlierOnConnection > 0);
      return p.requests("/stream").length >= 5 && reused;
    });
    await client.close();
    const streams = p.requests("/stream");
    assert.ok(streams.every((r) => r.earlierOnConnection === 0), JSON.stringify(streams.map((r) => r.earlierOnConnection)));
    const reports = new Set(p.requests("/flags/f/metrics").map((r) => r.connection));
    assert.ok(streams.every((r) => !reports.has(r.connection)), "a stream came on a report's connection");
  } finally {
    await client.close();
    await p.close();
  }
});
