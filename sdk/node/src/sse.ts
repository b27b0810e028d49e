// An incremental Server-Sent Events parser (the WHATWG event-stream format): chunks in, events
// out, whatever the chunking (even inside a UTF-8 character or a CRLF). Pure, bounded.

/** One dispatched event. */
export interface SseEvent {
  /** The `event:` field, `"message"` when absent. */
  readonly event: string;
  /** The `data:` lines joined by `\n`. */
  readonly data: string;
  /** The last event id in force when this event was dispatched (what `Last-Event-ID` sends back). */
  readonly id: string | null;
}

/** A line (or an event's data) longer than the parser accepts: a misbehaving server, not a big snapshot. */
export class LineTooLongError extends Error {
  override readonly name = "LineTooLongError";
  constructor(readonly limit: number) {
    super(`an event-stream line exceeds ${limit} characters`);
  }
}

/** Largest line or event accepted by default: room for a configuration with many large flags. */
export const DEFAULT_MAX_LINE = 64 * 1024 * 1024;

const NEWLINE = /[\r\n]/g;

export class SseParser {
  // The BOM is kept by the decoder so that exactly one is stripped, here.
  private readonly decoder = new TextDecoder("utf-8", { ignoreBOM: true });
  private line = "";
  /** The previous chunk ended a line on `\r`: a `\n` opening the next chunk belongs to it. */
  private afterCr = false;
  private started = false;
  private event = "";
  private data: string[] = [];
  private dataLength = 0;
  private lastId: string | null = null;

  constructor(private readonly maxLine: number = DEFAULT_MAX_LINE) {}

  /** Feeds a chunk (bytes, or text already decoded); returns the events it completed. */
  push(chunk: Uint8Array | string): SseEvent[] {
    let text = typeof chunk === "string" ? chunk : this.decoder.decode(chunk, { stream: true });
    const events: SseEvent[] = [];
    if (!this.started && text.length > 0) {
      this.started = true;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    let start = 0;
    if (this.afterCr && text.charCodeAt(0) === 0x0a) start = 1;
    if (text.length > 0) this.afterCr = false;
    NEWLINE.lastIndex = start;
    for (let m = NEWLINE.exec(text); m !== null; m = NEWLINE.exec(text)) {
      const end = m.index;
      const line = this.line + text.slice(start, end);
      this.line = "";
      this.checkLength(line.length);
      const event = this.processLine(line);
      if (event !== null) events.push(event);
      start = end + 1;
      if (text.charCodeAt(end) === 0x0d) {
        if (start === text.length) this.afterCr = true;
        else if (text.charCodeAt(start) === 0x0a) start += 1;
      }
      NEWLINE.lastIndex = start;
    }
    this.line += text.slice(start);
    this.checkLength(this.line.length);
    return events;
  }

  private checkLength(line: number): void {
    if (line + this.dataLength > this.maxLine) throw new LineTooLongError(this.maxLine);
  }

  private processLine(line: string): SseEvent | null {
    if (line.length === 0) return this.dispatch();
    if (line.charCodeAt(0) === 0x3a /* ':' */) return null;
    const colon = line.indexOf(":");
    let field = line;
    let value = "";
    if (colon >= 0) {
      field = line.slice(0, colon);
      value = line.slice(line.charCodeAt(colon + 1) === 0x20 ? colon + 2 : colon + 1);
    }
    switch (field) {
      case "event":
        this.event = value;
        break;
      case "data":
        this.data.push(value);
        this.dataLength += value.length + 1;
        break;
      case "id":
        if (!value.includes("\0")) this.lastId = value;
        break;
      // `retry:` is not honoured: the client's own jittered backoff decides.
      default:
        break;
    }
    return null;
  }

  private dispatch(): SseEvent | null {
    const event = this.event;
    this.event = "";
    if (this.data.length === 0) return null;
    const data = this.data.join("\n");
    this.data = [];
    this.dataLength = 0;
    return { event: event === "" ? "message" : event, data, id: this.lastId };
  }
}
