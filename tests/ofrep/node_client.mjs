// Evaluates flags through the real OpenFeature Node SDK + OFREP provider.
// Usage: node node_client.mjs BASE_URL TOKEN FLAG USERS — prints one JSON object like python_client.py.
import { OpenFeature } from "@openfeature/server-sdk";
import { OFREPProvider } from "@openfeature/ofrep-provider";

const [baseUrl, token, flag, usersArg] = process.argv.slice(2);
await OpenFeature.setProviderAndWait(new OFREPProvider({ baseUrl, headers: [["Authorization", `Bearer ${token}`]] }));
const client = OpenFeature.getClient();
const out = { users: {} };
for (let i = 0; i < Number(usersArg); i++) {
  const user = `user-${i}`;
  const d = await client.getBooleanDetails(flag, false, { targetingKey: user });
  if (d.errorCode) throw new Error(`${user}: ${d.errorCode} ${d.errorMessage}`);
  out.users[user] = { value: d.value, reason: d.reason, variant: d.variant };
}
const unknown = await client.getBooleanDetails("no-such-flag", true, { targetingKey: "user-1" });
out.unknown = { value: unknown.value, error_code: unknown.errorCode };
const missing = await client.getBooleanDetails(flag, true, {});
out.missing_key = { value: missing.value, error_code: missing.errorCode };
console.log(JSON.stringify(out));
await OpenFeature.close();
