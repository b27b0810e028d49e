// The Node SDK in a dozen lines: start a client, evaluate locally, record outcomes, close.
//
//   npm run build --prefix sdk/node
//   node sdk/node/examples/quickstart.mjs http://127.0.0.1:8080 customerio [token]
import { Client } from "../dist/index.js";

const [url = "http://127.0.0.1:8080", flag = "customerio", token] = process.argv.slice(2);

// Resolves once the configuration is in (or after initTimeoutMs, answering defaults meanwhile).
const client = await Client.create(url, { token, defaultValue: false, reportIntervalMs: 1_000 });
console.log(`connected: ${client.isConnected()}, ${flag}: ${JSON.stringify(client.flag(flag) ?? "unknown flag")}`);

for (const userId of ["user-1", "user-2", "alice@example.com"]) {
  const started = performance.now();
  const useNewPath = client.isEnabled(flag, userId); // local: no network round trip
  const { reason, version } = client.evaluation(flag, userId);
  console.log(`${userId}: ${useNewPath ? "new path" : "old path"} (${reason}, version ${version})`);
  // ...serve the request, then tell the service how it went, in the user's cohort:
  client.record(flag, userId, { error: false, latencyMs: performance.now() - started });
}

await client.close(); // one last push of the outcomes; the stream and the timer stop
console.log(`reports dropped: ${client.droppedReports()}`);
