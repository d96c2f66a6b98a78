"""grpc.aio, grpcio's asyncio API, with the sync system's service: generic
handlers on raw bytes (no .proto, no generated code), the same method names
and channel options (``grpc_sys``), so the rows differ only in the API.

Server and client are each an asyncio program: the server's loop runs in a
thread of its process (as the asyncio baseline's does), its handlers are
coroutines and an async generator.

one-way, bulk  one client-streaming call carrying n messages; its single
               response is the server's count
request        unary calls awaited one at a time
request16      16 tasks awaiting unary calls on one channel
stream         one server-streaming call, read with ``async for``
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc  # type: ignore[import-untyped]

from ..spec import Endpoint, Outcome, ServerHandle, Spec
from ._common import check_count, check_reply, split
from .grpc_sys import OPTIONS, SERVICE


def serve(spec: Spec) -> ServerHandle:
    count = [0]
    ports: queue.Queue[int] = queue.Queue()
    payload = spec.payload()

    async def echo(request: bytes, _ctx: Any) -> bytes:
        return request

    async def sink(requests: AsyncIterator[bytes], _ctx: Any) -> bytes:
        async for _ in requests:
            count[0] += 1
        return str(count[0]).encode()

    async def source(request: bytes, _ctx: Any) -> AsyncIterator[bytes]:
        for _ in range(int(request)):
            yield payload

    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Sink": grpc.stream_unary_rpc_method_handler(sink),
        "Source": grpc.unary_stream_rpc_method_handler(source),
    }

    async def main() -> None:
        # Made inside the running loop: a grpc.aio server belongs to it.
        server = grpc.aio.server(options=OPTIONS)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        ports.put(port)
        await server.wait_for_termination()

    threading.Thread(target=asyncio.run, args=(main(),), daemon=True).start()
    return ServerHandle({"port": ports.get(timeout=30)}, lambda: count[0])


def drive(spec: Spec, endpoint: Endpoint) -> Outcome:
    return asyncio.run(_drive(spec, endpoint["port"]))


async def _drive(spec: Spec, port: int) -> Outcome:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=OPTIONS) as channel:
        await asyncio.wait_for(channel.channel_ready(), 30)
        payload = spec.payload()
        if spec.kind in ("oneway", "bulk"):
            sink = channel.stream_unary(f"/{SERVICE}/Sink")
            start = time.perf_counter()
            got = int(await sink(itertools.repeat(payload, spec.n)))
            seconds = time.perf_counter() - start
            check_count("server received", got, spec.n)
            return Outcome(got, seconds)
        if spec.kind == "stream":
            source = channel.unary_stream(f"/{SERVICE}/Source")
            received = 0
            start = time.perf_counter()
            async for _ in source(str(spec.n).encode()):
                received += 1
            seconds = time.perf_counter() - start
            check_count("client received", received, spec.n)
            return Outcome(received, seconds)
        echo = channel.unary_unary(f"/{SERVICE}/Echo")
        tasks = 1 if spec.kind == "request" else spec.concurrency

        async def requester(share: int) -> list[int]:
            lat = [0] * share
            for i in range(share):
                t0 = time.perf_counter_ns()
                check_reply(await echo(payload), spec.size)
                lat[i] = time.perf_counter_ns() - t0
            return lat

        async def requests(n: int) -> list[int]:
            results = await asyncio.gather(*(requester(s) for s in split(n, tasks)))
            return [x for r in results for x in r]

        await requests(spec.warmup)
        start = time.perf_counter()
        lat = await requests(spec.n)
        return Outcome(len(lat), time.perf_counter() - start, lat)
