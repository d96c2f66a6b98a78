"""A plain asyncio-streams baseline: 4-byte big-endian length-prefixed frames.

It is what a Python service would write by hand without a library: one
``StreamReader.readexactly`` for the length and one for the body, one
``write`` plus ``drain`` per frame (asyncio sets TCP_NODELAY itself).

one-way, bulk  n frames, then an empty frame; the server answers it with its
               count, so the answer comes after every frame
request        one frame out, the echo back, one at a time
request16      16 tasks on one connection; each frame starts with a 4-byte id
               and one reader task hands every echo to the task waiting on it
stream         a frame holding n; the server writes n frames and an empty one
"""

from __future__ import annotations

import asyncio
import queue
import struct
import threading
import time

from ..spec import Endpoint, Outcome, ServerHandle, Spec
from ._common import check_count, check_reply, split

HEAD = struct.Struct(">I")
EMPTY = HEAD.pack(0)


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (length,) = HEAD.unpack(await reader.readexactly(4))
    return await reader.readexactly(length) if length else b""


def _frame(body: bytes) -> bytes:
    return HEAD.pack(len(body)) + body


def serve(spec: Spec) -> ServerHandle:
    """Runs an event loop in a thread; the handler fits the cell's kind."""
    count = [0]
    ports: queue.Queue[int] = queue.Queue()
    frame = _frame(spec.payload())

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if spec.kind in ("oneway", "bulk"):
                while await _read_frame(reader):
                    count[0] += 1
                writer.write(_frame(str(count[0]).encode()))
                await writer.drain()
            elif spec.kind == "stream":
                n = int(await _read_frame(reader))
                for _ in range(n):
                    writer.write(frame)
                    await writer.drain()
                writer.write(EMPTY)
                await writer.drain()
            while True:  # request kinds; afterwards, wait for the client to leave
                body = await _read_frame(reader)
                writer.write(_frame(body))
                await writer.drain()
        except asyncio.IncompleteReadError:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        ports.put(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    threading.Thread(target=asyncio.run, args=(main(),), daemon=True).start()
    return ServerHandle({"port": ports.get(timeout=30)}, lambda: count[0])


def drive(spec: Spec, endpoint: Endpoint) -> Outcome:
    return asyncio.run(_drive(spec, endpoint["port"]))


async def _drive(spec: Spec, port: int) -> Outcome:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        payload = spec.payload()
        if spec.kind in ("oneway", "bulk"):
            frame = _frame(payload)
            start = time.perf_counter()
            for _ in range(spec.n):
                writer.write(frame)
                await writer.drain()
            writer.write(EMPTY)
            await writer.drain()
            got = int(await _read_frame(reader))
            seconds = time.perf_counter() - start
            check_count("server received", got, spec.n)
            return Outcome(got, seconds)
        if spec.kind == "stream":
            received = 0
            start = time.perf_counter()
            writer.write(_frame(str(spec.n).encode()))
            await writer.drain()
            while await _read_frame(reader):
                received += 1
            seconds = time.perf_counter() - start
            check_count("client received", received, spec.n)
            return Outcome(received, seconds)
        if spec.kind == "request":
            await _sequential(reader, writer, payload, spec.warmup)
            start = time.perf_counter()
            lat = await _sequential(reader, writer, payload, spec.n)
            return Outcome(spec.n, time.perf_counter() - start, lat)
        await _concurrent(reader, writer, payload, spec.warmup, spec.concurrency)
        start = time.perf_counter()
        lat = await _concurrent(reader, writer, payload, spec.n, spec.concurrency)
        return Outcome(len(lat), time.perf_counter() - start, lat)
    finally:
        writer.close()


async def _sequential(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes, n: int
) -> list[int]:
    frame = _frame(payload)
    lat = [0] * n
    for i in range(n):
        t0 = time.perf_counter_ns()
        writer.write(frame)
        await writer.drain()
        check_reply(await _read_frame(reader), len(payload))
        lat[i] = time.perf_counter_ns() - t0
    return lat


async def _concurrent(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    payload: bytes,
    n: int,
    tasks: int,
) -> list[int]:
    """``tasks`` tasks pipelining requests with ids over the one connection."""
    loop = asyncio.get_running_loop()
    pending: dict[int, asyncio.Future[bytes]] = {}
    next_id = [0]

    async def read_replies() -> None:
        for _ in range(n):
            body = await _read_frame(reader)
            pending.pop(HEAD.unpack_from(body)[0]).set_result(body)

    async def requester(share: int) -> list[int]:
        lat = [0] * share
        for i in range(share):
            rid = next_id[0]
            next_id[0] += 1
            fut: asyncio.Future[bytes] = loop.create_future()
            pending[rid] = fut
            t0 = time.perf_counter_ns()
            writer.write(_frame(HEAD.pack(rid) + payload))
            await writer.drain()
            check_reply((await fut)[4:], len(payload))
            lat[i] = time.perf_counter_ns() - t0
        return lat

    reading = asyncio.create_task(read_replies())
    results = await asyncio.gather(*(requester(s) for s in split(n, tasks)))
    await reading
    return [x for r in results for x in r]
