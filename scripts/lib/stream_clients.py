"""Holds N idle `GET /stream` clients open against one service, for scripts/bench-clients.sh.

Usage: stream_clients.py PORT N READY_FILE
Opens N connections (at most 500 opening at a time), reads each one's first event (the
snapshot), writes "N" to READY_FILE once all are in, then keeps reading whatever comes (the
heartbeats) until killed. Exits 1 if a stream is refused or ends.
"""
import asyncio
import sys

REQUEST = b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"


async def one(port, opening, ready):
    async with opening:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(REQUEST)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"a stream was refused: {head.splitlines()[0]!r}")
        await reader.readuntil(b"\n\n")  # the snapshot event (inside the chunked body)
    ready()
    while await reader.read(65536):
        pass
    raise SystemExit("a stream ended")


async def main(port, count, ready_file):
    opening = asyncio.Semaphore(500)
    done = 0

    def ready():
        nonlocal done
        done += 1
        if done == count:
            with open(ready_file, "w") as f:
                f.write(str(count))

    await asyncio.gather(*(one(port, opening, ready) for _ in range(count)))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]))
