// The event-stream parser under every chunking, and the spec's details.
import assert from "node:assert/strict";
import { test } from "node:test";

import { LineTooLongError, SseParser } from "../../dist/sse.js";

const ev = (event, data, id = null) => ({ event, data, id });

// A multi-byte character (é, 2 bytes; 日, 3 bytes) so that some cuts fall inside one.
const STREAM =
  'event: snapshot\nid: 1\ndata: {"flags": [], "é": "日"}\n\n: heartbeat\n\n' +
  'event: change\nid: 2\ndata: {"name": "a",\ndata: "deleted": true}\n\n';

const EXPECTED = [ev("snapshot", '{"flags": [], "é": "日"}', "1"), ev("change", '{"name": "a",\n"deleted": true}', "2")];

test("snapshot, heartbeat and change parse into two events", () => {
  assert.deepEqual(new SseParser().push(new TextEncoder().encode(STREAM)), EXPECTED);
});

test("every split of the stream, at every byte, with every newline, yields the same events", () => {
  for (const newline of ["\n", "\r\n", "\r"]) {
    const bytes = new TextEncoder().encode(STREAM.replaceAll("\n", newline));
    for (let cut = 0; cut <= bytes.length; cut++) {
      const parser = new SseParser();
      const events = [...parser.push(bytes.subarray(0, cut)), ...parser.push(bytes.subarray(cut))];
      assert.deepEqual(events, EXPECTED, `newline ${JSON.stringify(newline)} cut at ${cut}`);
    }
    for (let a = 0; a < bytes.length; a += 7) {
      for (let b = a; b <= bytes.length; b += 5) {
        const parser = new SseParser();
        const events = [a, b, bytes.length].reduce(
          (acc, end, i, ends) => [...acc, ...parser.push(bytes.subarray(i === 0 ? 0 : ends[i - 1], end))],
          [],
        );
        assert.deepEqual(events, EXPECTED, `newline ${JSON.stringify(newline)} cuts at ${a} and ${b}`);
      }
    }
    const parser = new SseParser();
    const byteByByte = [...bytes].flatMap((byte) => parser.push(Uint8Array.of(byte)));
    assert.deepEqual(byteByByte, EXPECTED, `newline ${JSON.stringify(newline)} byte by byte`);
  }
});

test("an event is only dispatched by its blank line", () => {
  const parser = new SseParser();
  assert.deepEqual(parser.push("event: change\ndata: x\n"), []);
  assert.deepEqual(parser.push("\n"), [ev("change", "x")]);
});

test("fields follow the spec's details", () => {
  const events = new SseParser().push(
    "\ufeffdata:no space\n\ndata\n\nid: 7\nevent: x\n\nretry: 1500\nid: a\0b\ndata:  two\n\n",
  );
  // `data` without a colon is an empty data line; an event without data is not dispatched but its
  // id still counts; a NUL in an id is ignored; only the first space is stripped.
  assert.deepEqual(events, [ev("message", "no space"), ev("message", ""), ev("message", " two", "7")]);
});

test("only one byte-order mark is stripped, and only at the start", () => {
  const bom = new TextEncoder().encode("\ufeff");
  const parser = new SseParser();
  assert.deepEqual(parser.push(bom.subarray(0, 1)), []);
  assert.deepEqual(parser.push(new Uint8Array([...bom.subarray(1), ...new TextEncoder().encode("data: a\n\n")])), [
    ev("message", "a"),
  ]);
});

test("an overlong line is refused instead of buffered", () => {
  const parser = new SseParser(16);
  assert.deepEqual(parser.push("data: 0123456789"), []);
  assert.throws(() => parser.push("abcdef"), LineTooLongError);
  const data = new SseParser(16);
  assert.deepEqual(data.push("data: 0123456\n"), []);
  assert.throws(() => data.push("data: 0123456\n"), LineTooLongError, "the event's data counts too");
});
