"""The async twin of test_stream_cut.py: a stream cut by the connection's
end is not a finished stream. ``async for`` and ``await recv()`` raise
ConnectionClosed, a handler's callback gets None as at any end, an
``async def`` handler's ``async for`` raises, and ``stream.error`` says
which it was. Against a hand-driven peer (tests/aio_wire.py), on both loops."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

import gofast
import gofast.aio
from aio_wire import ARawPeer, araw_server
from gofast import BinMessage
from wire import FINISH, STREAM_MSG, STREAM_START, encode_finish

START_ID = 100


async def opened(raw: ARawPeer) -> int:
    """Reads the STREAM-START the transport sent, answers one message."""
    start = await raw.read_frame()
    assert start.kind == STREAM_START
    await raw.send_frame(STREAM_MSG, start.opaque, START_ID, b"one")
    return int(start.opaque)


async def test_iterating_a_cut_stream_raises_connection_closed() -> None:
    async with araw_server() as (raw, t):
        stream = t.stream(BinMessage(START_ID, b"open"))
        await opened(raw)
        assert (await anext(stream)).data == b"one"
        raw.sock.close()  # the peer dies mid-stream
        with pytest.raises(gofast.ConnectionClosed, match="cut"):
            async with asyncio.timeout(10):
                await anext(stream)
        with pytest.raises(gofast.ConnectionClosed):
            await stream.recv(timeout=5)  # it stays cut
        assert isinstance(stream.error, gofast.ConnectionClosed)


async def test_a_finished_stream_ends_iteration_without_error() -> None:
    async with araw_server() as (raw, t):
        stream = t.stream(BinMessage(START_ID, b"open"))
        opaque = await opened(raw)
        await raw.send(encode_finish(opaque))
        async with asyncio.timeout(10):
            assert [m.data async for m in stream] == [b"one"]
        assert stream.error is None
        assert await stream.recv(timeout=5) is None


async def test_our_own_close_cuts_open_streams_too() -> None:
    async with araw_server() as (raw, t):
        stream = t.stream(BinMessage(START_ID, b"open"))
        await opened(raw)
        async with asyncio.timeout(10):
            while t.stats()["n_rxstream"] < 1:  # "one" is in before we close
                await asyncio.sleep(0.002)
        await t.aclose()
        assert (await stream.recv(timeout=5)) == BinMessage(START_ID, b"one")
        with pytest.raises(gofast.ConnectionClosed, match="closed by this side"):
            await anext(stream)


class Accepted:
    """The STREAM-START handler's view: what it got, how it ended."""

    def __init__(self) -> None:
        self.got: list[Any] = []
        self.stream: gofast.aio.Stream | None = None
        self.ended = asyncio.Event()

    def callback(self, stream: gofast.aio.Stream, msg: BinMessage) -> Callable[[Any], None]:
        self.stream = stream

        def on_msg(m: BinMessage | None) -> None:
            self.got.append(m)
            if m is None:
                self.ended.set()

        return on_msg

    async def conversation(self, stream: gofast.aio.Stream, msg: BinMessage) -> None:
        self.stream = stream
        try:
            async for m in stream:
                self.got.append(m)
            self.got.append(None)
        except gofast.ConnectionClosed as e:
            self.got.append(e)
        finally:
            self.ended.set()


@pytest.mark.parametrize("shape", ["callback", "conversation"])
@pytest.mark.parametrize("end", ["finish", "cut"])
async def test_a_stream_handler_learns_why_its_stream_ended(shape: str, end: str) -> None:
    accepted = Accepted()
    handler = getattr(accepted, shape)
    async with araw_server(setup=lambda t: t.subscribe(START_ID, handler)) as (raw, t):
        opaque = raw.next_opaque()
        await raw.send_frame(STREAM_START, opaque, START_ID, b"open")
        await raw.send_frame(STREAM_MSG, opaque, START_ID, b"one")
        async with asyncio.timeout(10):
            while not accepted.got:
                await asyncio.sleep(0.002)
        if end == "finish":
            await raw.send(encode_finish(opaque))
        else:
            raw.sock.close()
        async with asyncio.timeout(10):
            await accepted.ended.wait()
        assert accepted.got[0] == BinMessage(START_ID, b"one")
        assert accepted.stream is not None
        if end == "finish":
            assert accepted.got[1:] == [None]
            assert accepted.stream.error is None
            if shape == "conversation":  # its return closed our side
                frames = await raw.read_frame()
                assert (frames.kind, frames.opaque) == (FINISH, opaque)
        else:
            assert isinstance(accepted.stream.error, gofast.ConnectionClosed)
            if shape == "callback":
                assert accepted.got[1:] == [None]  # None, as at any end
            else:
                assert len(accepted.got) == 2
                assert isinstance(accepted.got[1], gofast.ConnectionClosed)
