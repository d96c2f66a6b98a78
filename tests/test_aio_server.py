"""gofast.aio.Server: the async twins of test_server.py (handlers for every
connection, start/serve_forever/stop with grace, the connection limit, a
silent client, hooks, statistics), on both loops."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import gofast
import gofast.aio
from conftest import client_tls, listen_on
from gofast import BinMessage

ECHO_ID = 300
SLOW_ID = 301


def echo(stream: Any, msg: BinMessage) -> BinMessage | None:
    return msg if stream is not None else None


def server_for(link: str, **kw: Any) -> gofast.aio.Server:
    # Where listen_on would listen (a fresh port or socket path).
    with listen_on(link) as probe:
        address = probe.address
    tls = probe.tls
    return gofast.aio.Server(address, tls=tls, **kw)


async def dial(server: gofast.aio.Server, link: str, **kw: Any) -> gofast.aio.Transport:
    t = await gofast.aio.connect(server.address, tls=client_tls(link), **kw)
    await t.handshake()
    return t


async def test_handlers_apply_to_every_connection(link: str) -> None:
    async def slow(stream: Any, msg: BinMessage) -> BinMessage:
        await asyncio.sleep(0)
        return BinMessage(SLOW_ID, msg.data[::-1])

    server = server_for(link).subscribe(ECHO_ID, echo).subscribe(SLOW_ID, slow)
    async with server:
        clients = [await dial(server, link) for _ in range(5)]
        for i, c in enumerate(clients):
            assert (await c.request(BinMessage(ECHO_ID, b"%d" % i))).data == b"%d" % i
            assert (await c.request(BinMessage(SLOW_ID, b"ab"))).data == b"ba"
        # The server lists a connection once its own side of the handshake
        # is through, which may come just after the client's first replies.
        async with asyncio.timeout(10):
            while len(server.connections) < 5:
                await asyncio.sleep(0.001)
        assert len(server.connections) == 5
        with pytest.raises(gofast.UsageError):
            server.subscribe(ECHO_ID + 5, echo)
        for c in clients:
            await c.aclose()
    st = server.stats()
    assert st["n_accepted"] == 5 and st["n_live"] == 0
    assert st["n_rxreq"] >= 15


async def test_stop_lets_a_slow_response_reach_the_client(link: str) -> None:
    gate = asyncio.Event()

    async def slow(stream: Any, msg: BinMessage) -> BinMessage:
        await gate.wait()
        return msg

    server = server_for(link).subscribe(SLOW_ID, slow)
    await server.start()
    c = await dial(server, link)
    pending = asyncio.ensure_future(c.request(BinMessage(SLOW_ID, b"late")))
    async with asyncio.timeout(10):
        while server.stats().get("n_rxreq", 0) < 2:
            await asyncio.sleep(0.002)
    stopping = asyncio.ensure_future(server.stop(grace=10))
    await asyncio.sleep(0.05)
    assert not stopping.done()  # held by the request in flight
    gate.set()
    assert (await pending).data == b"late"
    await stopping
    await c.wait_closed()


async def test_stop_closes_after_grace_when_work_never_finishes(link: str) -> None:
    # Never responds: as the Go reference, without x-errors (on by default,
    # it would fail the request at once with RemoteError NoResponse).
    server = server_for(link, settings={"errors.extension": False})
    server.subscribe(SLOW_ID, lambda s, m: None)
    await server.start()
    c = await dial(server, link)
    pending = asyncio.ensure_future(c.request(BinMessage(SLOW_ID, b"")))
    await asyncio.sleep(0.05)
    await server.stop(grace=0.1)
    with pytest.raises(gofast.ConnectionClosed):
        await pending


async def test_connection_limit_refuses_and_counts(link: str) -> None:
    server = server_for(link, max_connections=1)
    async with server:
        first = await dial(server, link)
        t = await gofast.aio.connect(server.address, tls=client_tls(link))
        with pytest.raises((gofast.ConnectionClosed, gofast.TLSError, gofast.Timeout)):
            await t.handshake(5)
        assert server.stats()["n_refused"] == 1
        await first.aclose()
        await t.aclose()


async def test_a_silent_client_delays_no_one_and_is_dropped() -> None:
    server = server_for("tcp", handshake_timeout=0.2).subscribe(ECHO_ID, echo)
    async with server:
        silent = await gofast.aio.connect(server.address)  # never handshakes
        c = await dial(server, "tcp")
        assert (await c.request(BinMessage(ECHO_ID, b"x"))).data == b"x"
        async with asyncio.timeout(10):  # (silent has no reader: it cannot tell)
            while server.stats()["n_handshake_failed"] != 1:
                await asyncio.sleep(0.002)
        await c.aclose()
        await silent.aclose()


async def test_hooks_run_once_per_connection_and_a_raising_one_is_counted() -> None:
    events: list[str] = []

    async def on_connect(t: gofast.aio.Transport) -> None:
        events.append("connect")

    def on_disconnect(t: gofast.aio.Transport) -> None:
        events.append("disconnect")
        raise RuntimeError("hook failed")

    server = server_for("tcp", on_connect=on_connect, on_disconnect=on_disconnect)
    async with server:
        c = await dial(server, "tcp")
        async with asyncio.timeout(10):
            while events != ["connect"]:
                await asyncio.sleep(0.002)
        await c.aclose()
        async with asyncio.timeout(10):
            while events != ["connect", "disconnect"]:
                await asyncio.sleep(0.002)
    assert server.stats()["n_hook_errors"] == 1


async def test_serve_forever_stops_when_cancelled() -> None:
    server = server_for("tcp").subscribe(ECHO_ID, echo)
    serving = asyncio.ensure_future(server.serve_forever(grace=0))
    async with asyncio.timeout(10):
        while not server.running:
            await asyncio.sleep(0.002)
    c = await dial(server, "tcp")
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving
    assert not server.running
    await c.wait_closed()
