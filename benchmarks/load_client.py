"""An open-loop HTTP/1.1 load generator: POST requests at a constant rate, scheduled by the clock.

Run as its own process (`python -m benchmarks.load_client`) so its CPU is not the server's. Each request has a time
it is due (start + n / rate); it is sent then, on an idle keep-alive connection or a new one, whatever the earlier
requests are doing (open loop: a slow server does not slow the offered rate). Its latency runs from the time it was
due, so a send made late by the generator itself counts against the server as well, never hides a stall
(coordinated omission). Raw asyncio streams rather than an HTTP client library: at 500 requests/s on a shared 2-core
machine the generator's own cost per request must stay far below the latency measured.

Writes one JSON object to stdout: `{"started_at", "due": [...], "latency": [...], "status": [...], "errors": {...}}`,
one entry per request in the order due (status 0 and the exception's name for a request that got no answer).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

TIMEOUT_S = 10.0


@dataclass
class Results:
    due: list[float]
    latency: list[float]
    status: list[int]
    errors: Counter[str] = field(default_factory=Counter)


class Connections:
    """Idle keep-alive connections to one server; a request takes one or opens a new one."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened = 0

    async def take(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while self.idle:
            reader, writer = self.idle.pop()
            if not reader.at_eof() and not writer.is_closing():
                return reader, writer
            writer.close()
        self.opened += 1
        return await asyncio.open_connection(self.host, self.port)

    def give_back(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.idle.append((reader, writer))

    def close(self) -> None:
        for _reader, writer in self.idle:
            writer.close()


async def exchange(conns: Connections, request: bytes) -> int:
    """Send one request, read its whole response; the connection goes back to the pool unless the server closes."""
    reader, writer = await conns.take()
    try:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        await reader.readexactly(int(headers.get("content-length", "0")))
    except BaseException:
        writer.close()
        raise
    if headers.get("connection", "").lower() == "close":
        writer.close()
    else:
        conns.give_back(reader, writer)
    return status


def post(host: str, port: int, path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def generate(host: str, port: int, path: str, bodies: list[bytes], rate: float) -> Results:
    loop = asyncio.get_running_loop()
    conns = Connections(host, port)
    n = len(bodies)
    out = Results([0.0] * n, [0.0] * n, [0] * n)

    async def one(i: int, due: float) -> None:
        try:
            out.status[i] = await asyncio.wait_for(exchange(conns, post(host, port, path, bodies[i])), TIMEOUT_S)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError) as exc:
            out.errors[type(exc).__name__] += 1
        out.latency[i] = loop.time() - due

    start = loop.time() + 0.05
    pending: set[asyncio.Task[None]] = set()
    for i in range(n):
        due = start + i / rate
        out.due[i] = due - start
        wait = due - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        task = asyncio.create_task(one(i, due))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending)
    conns.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/jobs")
    ap.add_argument("--rate", type=float, required=True, help="requests per second")
    ap.add_argument("--bodies", required=True, help="a file of request bodies, one JSON document a line")
    args = ap.parse_args(argv)
    with open(args.bodies, "rb") as f:
        bodies = [line.rstrip(b"\n") for line in f if line.strip()]
    started_at = time.time()
    out = asyncio.run(generate(args.host, args.port, args.path, bodies, args.rate))
    json.dump({"started_at": started_at, "due": out.due, "latency": out.latency, "status": out.status,
               "errors": dict(out.errors)}, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
