"""pyzmq's asyncio API (zmq.asyncio): the sync system's socket patterns, with
DEALER/ROUTER for both request kinds, each side an asyncio program (the
server's loop in a thread of its process, as the asyncio baseline's).

one-way, bulk  PUSH -> PULL, then an empty end frame; the client asks a REP
               socket for the count, which the server answers only after the
               end frame (so after every message)
request        DEALER -> ROUTER, one request awaited at a time
request16      DEALER -> ROUTER, 16 tasks on the one DEALER; each request
               carries a 4-byte id and one reader task hands every reply to
               the task waiting on it (a ROUTER echoes in order, but which
               awaiting recv gets which reply is not the sender's to choose)
stream         PUSH (server) -> PULL (client), started by a REQ, ended by an
               empty frame

PUSH and DEALER wait at their high-water mark rather than dropping (a ROUTER
would drop, which is why the stream does not go over one), so counts must
match. Server sockets are kept for the life of the process, as the sync
system's are: one closed with LINGER 0 would drop what its queue still holds.
"""

from __future__ import annotations

import asyncio
import queue
import struct
import threading
import time
from collections.abc import Coroutine
from typing import Any

import zmq
import zmq.asyncio

from ..spec import Endpoint, Outcome, ServerHandle, Spec
from ._common import check_count, check_reply, keep_alive, split

END = b""
TAG = struct.Struct("<I")


def _bind(ctx: zmq.asyncio.Context, kind: int) -> tuple[zmq.asyncio.Socket, int]:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind("tcp://127.0.0.1:*")
    keep_alive(sock)
    endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    return sock, int(endpoint.rsplit(":", 1)[1])


def _connect(ctx: zmq.asyncio.Context, kind: int, port: int) -> zmq.asyncio.Socket:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{port}")
    return sock


def serve(spec: Spec) -> ServerHandle:
    count = [0]
    endpoints: queue.Queue[Endpoint] = queue.Queue()

    def sockets(ctx: zmq.asyncio.Context) -> tuple[Coroutine[Any, Any, None], Endpoint]:
        """The serving coroutine for the cell's kind and where to reach it."""
        if spec.kind in ("oneway", "bulk"):
            pull, data_port = _bind(ctx, zmq.PULL)
            rep, ctl_port = _bind(ctx, zmq.REP)

            async def sink() -> None:
                while await pull.recv() != END:
                    count[0] += 1
                await rep.recv()
                await rep.send(str(count[0]).encode())

            return sink(), {"data": data_port, "control": ctl_port}
        if spec.kind == "stream":
            push, data_port = _bind(ctx, zmq.PUSH)
            rep, ctl_port = _bind(ctx, zmq.REP)
            payload = spec.payload()

            async def source() -> None:
                n = int(await rep.recv())
                await rep.send(b"go")
                for _ in range(n):
                    await push.send(payload)
                await push.send(END)

            return source(), {"data": data_port, "control": ctl_port}
        router, port = _bind(ctx, zmq.ROUTER)

        async def route() -> None:
            while True:
                await router.send_multipart(await router.recv_multipart())

        return route(), {"data": port}

    async def main() -> None:
        # Context and sockets made on the loop that uses them.
        ctx = zmq.asyncio.Context()
        keep_alive(ctx)
        serving, endpoint = sockets(ctx)
        endpoints.put(endpoint)
        await serving
        await asyncio.Event().wait()  # the loop stays, and with it the sockets' readers

    threading.Thread(target=asyncio.run, args=(main(),), daemon=True).start()
    return ServerHandle(endpoints.get(timeout=30), lambda: count[0])


def drive(spec: Spec, endpoint: Endpoint) -> Outcome:
    return asyncio.run(_drive(spec, endpoint))


async def _drive(spec: Spec, endpoint: Endpoint) -> Outcome:
    ctx = zmq.asyncio.Context()
    payload = spec.payload()
    if spec.kind in ("oneway", "bulk"):
        push = _connect(ctx, zmq.PUSH, endpoint["data"])
        req = _connect(ctx, zmq.REQ, endpoint["control"])
        start = time.perf_counter()
        for _ in range(spec.n):
            await push.send(payload)
        await push.send(END)
        await req.send(b"count")
        got = int(await req.recv())
        seconds = time.perf_counter() - start
        check_count("server received", got, spec.n)
        return Outcome(got, seconds)
    if spec.kind == "stream":
        pull = _connect(ctx, zmq.PULL, endpoint["data"])
        req = _connect(ctx, zmq.REQ, endpoint["control"])
        received = 0
        start = time.perf_counter()
        await req.send(str(spec.n).encode())
        await req.recv()
        while await pull.recv() != END:
            received += 1
        seconds = time.perf_counter() - start
        check_count("client received", received, spec.n)
        return Outcome(received, seconds)
    dealer = _connect(ctx, zmq.DEALER, endpoint["data"])
    if spec.kind == "request":
        await _sequential(dealer, payload, spec.warmup)
        start = time.perf_counter()
        lat = await _sequential(dealer, payload, spec.n)
        return Outcome(spec.n, time.perf_counter() - start, lat)
    await _concurrent(dealer, payload, spec.warmup, spec.concurrency)
    start = time.perf_counter()
    lat = await _concurrent(dealer, payload, spec.n, spec.concurrency)
    return Outcome(len(lat), time.perf_counter() - start, lat)


async def _sequential(dealer: zmq.asyncio.Socket, payload: bytes, n: int) -> list[int]:
    lat = [0] * n
    for i in range(n):
        t0 = time.perf_counter_ns()
        await dealer.send(payload)
        check_reply(await dealer.recv(), len(payload))
        lat[i] = time.perf_counter_ns() - t0
    return lat


async def _concurrent(dealer: zmq.asyncio.Socket, payload: bytes, n: int, tasks: int) -> list[int]:
    """``tasks`` tasks sharing n requests over the one DEALER, matched by id."""
    loop = asyncio.get_running_loop()
    pending: dict[int, asyncio.Future[bytes]] = {}
    next_id = [0]

    async def read_replies() -> None:
        for _ in range(n):
            tag, body = await dealer.recv_multipart()
            pending.pop(TAG.unpack(tag)[0]).set_result(body)

    async def requester(share: int) -> list[int]:
        lat = [0] * share
        for i in range(share):
            rid = next_id[0]
            next_id[0] += 1
            fut: asyncio.Future[bytes] = loop.create_future()
            pending[rid] = fut
            t0 = time.perf_counter_ns()
            await dealer.send_multipart([TAG.pack(rid), payload])
            check_reply(await fut, len(payload))
            lat[i] = time.perf_counter_ns() - t0
        return lat

    reading = asyncio.create_task(read_replies())
    results = await asyncio.gather(*(requester(s) for s in split(n, tasks)))
    await reading
    return [x for r in results for x in r]
