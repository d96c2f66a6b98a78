"""Limits against a hostile peer, through gofast.aio: the async twins of
test_limits.py. How many streams a peer may keep open (those past the
limit never reach a handler on the loop; a gofast.aio opener refused one
sees its ``async for`` end), and how long it may stay silent (the idle
close ends ``wait_closed()`` and fails awaited requests with the reason).
The log limit is the core's, the same for both front ends: not repeated."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import gofast
import gofast.aio
import wire
from aio_wire import AInbox, araw_server, until
from conftest import APair, make_apair
from gofast import BinMessage
from test_limits import POST_ID, REQ_ID, STREAM_ID, TIMEOUT
from wire import FINISH, REQUEST, STREAM_START, encode_finish, encode_frame

Factory = Callable[..., Awaitable[APair]]


async def test_settings_are_validated_and_kept() -> None:
    with socket.create_server(("127.0.0.1", 0)) as lis:
        addr = lis.getsockname()[:2]
        for bad in ({"streams.max": 0}, {"idle.timeout": 0}, {"idle.timeout": 1e9}):
            with pytest.raises(gofast.SettingsError):
                await gofast.aio.connect(addr, settings=bad)
    async with gofast.aio.listen(("127.0.0.1", 0)) as alis:
        dialed = asyncio.ensure_future(gofast.aio.connect(alis.address))
        with pytest.raises(gofast.SettingsError):
            await alis.accept(settings={"streams.max": -1}, timeout=TIMEOUT)
        await (await dialed).aclose()
    settings = {"streams.max": 7, "idle.timeout": 2.5}
    async with araw_server(settings, handshake=False) as (_, t):
        assert {k: t.settings[k] for k in settings} == settings


async def test_streams_beyond_the_limit_never_reach_the_loop() -> None:
    """The peer opens limit+N streams and finishes none: the first `limit`
    reach the ``async def`` handler, the other N are answered with FINISH,
    dropped and counted; once one of the first ends, its handler returns
    and makes room for one more."""
    limit, extra = 40, 400
    opened = AInbox()

    async def on_stream(stream: gofast.aio.Stream, msg: BinMessage) -> None:
        opened.append(stream.opaque)
        async for _ in stream:
            pass

    async with araw_server(
        {"streams.max": limit}, setup=lambda t: t.subscribe(STREAM_ID, on_stream), name="victim"
    ) as (raw, t):
        before = dict(t.stats())
        opaques = [raw.next_opaque() for _ in range(limit + extra)]
        await raw.send(b"".join(encode_frame(STREAM_START, o, STREAM_ID, b"open") for o in opaques))
        # A ping after them: its echo means every STREAM-START was handled.
        ping = raw.next_opaque()
        await raw.send_frame(REQUEST, ping, wire.PING_ID, wire.ping_payload("after"))
        finished, echoed = [], False
        deadline = time.monotonic() + TIMEOUT
        while not echoed or len(finished) < extra:
            f = await raw.read_frame(max(0.1, deadline - time.monotonic()))
            if f.kind == FINISH:
                finished.append(f.opaque)
            else:
                assert (f.kind, f.opaque, f.id) == (REQUEST, ping, wire.PING_ID), f
                echoed = True
        assert finished == opaques[limit:]
        assert sorted(await opened.wait_for(limit, TIMEOUT)) == opaques[:limit]
        assert t._t._exchanges_in_use() == (0, limit)
        after = dict(t.stats())
        assert after["n_rxstart"] - before["n_rxstart"] == limit + extra
        assert after["n_mdrops"] - before["n_mdrops"] == extra
        assert after["n_txfin"] - before["n_txfin"] == extra
        # A stream that ends makes room for one more.
        await raw.send(encode_finish(opaques[0]))
        fin = await raw.read_frame(TIMEOUT)  # the handler returned: our side closed
        assert (fin.kind, fin.opaque) == (FINISH, opaques[0])
        await until(lambda: t._t._exchanges_in_use() == (0, limit - 1), TIMEOUT, "stream end")
        late = raw.next_opaque()
        await raw.send_frame(STREAM_START, late, STREAM_ID, b"open")
        assert (await opened.wait_for(limit + 1, TIMEOUT))[-1] == late
        assert t._t._exchanges_in_use() == (0, limit)
        assert t.stats()["n_handler_errors"] == 0
        assert not t.closed


async def test_an_aio_peer_refused_a_stream_sees_it_end(apair_factory: Factory) -> None:
    """The opener of a stream past the limit gets its end (``recv()`` is
    None, ``async for`` stops) instead of a stream that waits forever."""
    held = AInbox()

    def on_stream(stream: Any, msg: BinMessage) -> Any:
        held.append(stream)
        return lambda m: None

    p = await apair_factory(
        server_setup=lambda t: t.subscribe(STREAM_ID, on_stream),
        server_settings={"streams.max": 2},
    )
    streams = [p.client.stream(BinMessage(STREAM_ID, b"%d" % i)) for i in range(3)]
    assert await streams[2].recv(TIMEOUT) is None
    assert [m async for m in streams[2]] == []
    await held.wait_for(2, TIMEOUT)
    assert p.server._t._exchanges_in_use() == (0, 2)
    for s in streams[:2]:
        with pytest.raises(gofast.Timeout):  # still open, nothing sent
            await s.recv(0.05)
    for s in streams:
        await s.close()


async def test_a_silent_peer_is_closed_after_the_idle_timeout() -> None:
    """Handshake, then nothing: the transport closes in about idle.timeout;
    ``wait_closed()`` returns and later awaits say why."""
    idle = 0.3
    async with araw_server({"idle.timeout": idle}, name="victim") as (raw, t):
        began = time.monotonic()
        await raw.wait_closed(TIMEOUT)
        took = time.monotonic() - began
        async with asyncio.timeout(TIMEOUT):
            await t.wait_closed()
        assert t.closed
        # The raw peer's last byte came just before `began`.
        assert idle - 0.05 <= took < idle + 2.0, took
        with pytest.raises(gofast.ConnectionClosed, match="idle"):
            await t.post(BinMessage(POST_ID, b"late"))


async def test_idle_close_fails_an_awaited_request_with_the_reason() -> None:
    async with araw_server({"idle.timeout": 0.3}, name="victim") as (raw, t):
        fut = asyncio.ensure_future(t.request(BinMessage(REQ_ID, b"q"), None, TIMEOUT))
        req = await raw.read_frame(TIMEOUT)
        assert (req.kind, req.id) == (REQUEST, REQ_ID)
        done, _ = await asyncio.wait([fut], timeout=TIMEOUT)
        assert done, "the awaited request hangs after the idle close"
        with pytest.raises(gofast.ConnectionClosed, match="idle"):
            fut.result()
        await raw.wait_closed(TIMEOUT)


async def test_heartbeats_keep_an_idle_aio_connection_open() -> None:
    """An aio server with idle.timeout stays connected while the peer's
    heartbeats come more often; once they stop, it closes."""
    idle = 0.3
    p = await make_apair(server_settings={"idle.timeout": idle})
    try:
        p.client.send_heartbeat(0.05)
        began = time.monotonic()
        # Beats arriving for 3 timeouts' worth of time, the server open throughout.
        await until(
            lambda: p.server.closed or time.monotonic() - began > 3 * idle, TIMEOUT, "3 timeouts"
        )
        assert not p.server.closed
        assert p.server.stats()["n_rxbeats"] >= 3
        p.client.send_heartbeat(None)
        async with asyncio.timeout(TIMEOUT):
            await p.server.wait_closed()
        with pytest.raises(gofast.ConnectionClosed, match="idle"):
            await p.server.ping()
    finally:
        await p.close()
