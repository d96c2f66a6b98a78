"""gofast.aio: the asyncio front end, default settings; server and client
each an asyncio program (the server's loop in a thread of its process, as
the asyncio baseline's), handlers plain functions running on the loop.

one-way, bulk  ``await post()`` ×n, then a request for the server's count
request        ``await request()``, one at a time
request16      16 tasks on one transport, each awaiting its own requests
stream         ``stream()`` opened by the client, filled by an async
               generator handler, read with ``async for``
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import gofast
import gofast.aio

from ..spec import Endpoint, Outcome, ServerHandle, Spec
from ._common import check_count, check_reply, split

DATA_ID, COUNT_ID, STREAM_ID, ECHO_ID = 100, 101, 102, 103


def serve(spec: Spec) -> ServerHandle:
    count = [0]
    ports: queue.Queue[int] = queue.Queue()
    item = gofast.BinMessage(STREAM_ID, spec.payload())

    def on_data(_s: Any, _m: gofast.BinMessage) -> None:
        count[0] += 1

    def on_count(_s: Any, _m: gofast.BinMessage) -> gofast.BinMessage:
        return gofast.BinMessage(COUNT_ID, str(count[0]).encode())

    def on_echo(_s: Any, m: gofast.BinMessage) -> gofast.BinMessage:
        return m

    async def on_stream(_s: Any, m: gofast.BinMessage) -> AsyncIterator[gofast.BinMessage]:
        for _ in range(int(m.data)):
            yield item

    async def main() -> None:
        server = gofast.aio.Server(("127.0.0.1", 0), name="compare-server")
        server.subscribe(DATA_ID, on_data).subscribe(COUNT_ID, on_count)
        server.subscribe(ECHO_ID, on_echo).subscribe(STREAM_ID, on_stream)
        await server.start()
        address = server.address
        assert isinstance(address, tuple)
        ports.put(address[1])
        await asyncio.Event().wait()

    threading.Thread(target=asyncio.run, args=(main(),), daemon=True).start()
    return ServerHandle({"port": ports.get(timeout=30)}, lambda: count[0])


def drive(spec: Spec, endpoint: Endpoint) -> Outcome:
    return asyncio.run(_drive(spec, endpoint["port"]))


async def _drive(spec: Spec, port: int) -> Outcome:
    t = await gofast.aio.connect(("127.0.0.1", port), name="compare-client")
    await t.handshake()
    try:
        if spec.kind in ("oneway", "bulk"):
            msg = gofast.BinMessage(DATA_ID, spec.payload())
            start = time.perf_counter()
            for _ in range(spec.n):
                await t.post(msg)
            got = int((await t.request(gofast.BinMessage(COUNT_ID, b""))).data)
            seconds = time.perf_counter() - start
            check_count("server received", got, spec.n)
            return Outcome(got, seconds)
        if spec.kind == "stream":
            received = 0
            start = time.perf_counter()
            async for _ in t.messages(gofast.BinMessage(STREAM_ID, str(spec.n).encode())):
                received += 1
            seconds = time.perf_counter() - start
            check_count("client received", received, spec.n)
            return Outcome(received, seconds)
        echo = gofast.BinMessage(ECHO_ID, spec.payload())
        tasks = 1 if spec.kind == "request" else spec.concurrency
        await _requests(t, echo, spec.warmup, tasks, spec.size)
        start = time.perf_counter()
        lat = await _requests(t, echo, spec.n, tasks, spec.size)
        return Outcome(len(lat), time.perf_counter() - start, lat)
    finally:
        await t.aclose()


async def _requests(
    t: gofast.aio.Transport, echo: gofast.BinMessage, n: int, tasks: int, size: int
) -> list[int]:
    async def requester(share: int) -> list[int]:
        lat = [0] * share
        for i in range(share):
            t0 = time.perf_counter_ns()
            check_reply((await t.request(echo)).data, size)
            lat[i] = time.perf_counter_ns() - t0
        return lat

    results = await asyncio.gather(*(requester(s) for s in split(n, tasks)))
    return [x for r in results for x in r]
