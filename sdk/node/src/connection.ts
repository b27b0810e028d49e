// The stream's request, on a connection of its own.
//
// `fetch` takes a connection its pool keeps alive when it has one (one a report push used a
// moment before, say). The service serves a connection whose first request is `GET /stream` at a
// fraction of the memory of one that served other requests first (its docs/clients.md,
// "Figures"), so the stream is requested through `node:http` without an agent: always a new
// connection, closed with the stream.

import { type IncomingMessage, request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";

/** Sends `GET url` on a new connection; resolves with the answer's head, its body still to read. */
export function openOwnConnection(url: URL, headers: Record<string, string>, signal: AbortSignal): Promise<IncomingMessage> {
  const request = url.protocol === "https:" ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const sent = request(url, { method: "GET", headers, agent: false, signal }, resolve);
    sent.on("error", reject);
    sent.end();
  });
}
