"""gofast.aio streams: the async twins of test_streams.py and
test_messages.py (opening, sending both ways, closing, iteration, the
connection's end under a stream), and the asyncio shapes of a stream
handler: a callback, an ``async def`` conversation, an async generator and
a plain generator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

import gofast
import gofast.aio
from conftest import APair
from gofast import BinMessage

START_ID = 500
ITEM_ID = 501

Factory = Callable[..., Awaitable[APair]]
EXT = {"errors.extension": True}


def items(n: int) -> list[bytes]:
    return [b"item %d" % i for i in range(n)]


async def test_an_async_generator_handler_streams_its_yields(apair_factory: Factory) -> None:
    async def count(stream: gofast.aio.Stream, msg: BinMessage) -> AsyncIterator[BinMessage]:
        for i in range(int(msg.data)):
            await asyncio.sleep(0) if i % 100 == 0 else None
            yield BinMessage(ITEM_ID, b"item %d" % i)

    p = await apair_factory(server_setup=lambda t: t.subscribe(START_ID, count))
    got = [m.data async for m in p.client.messages(BinMessage(START_ID, b"1000"))]
    assert got == items(1000)
    await _no_exchanges_left(p)


async def test_a_plain_generator_handler_streams_too(apair_factory: Factory) -> None:
    def count(stream: gofast.aio.Stream, msg: BinMessage) -> Iterator[BinMessage]:
        for i in range(int(msg.data)):
            yield BinMessage(ITEM_ID, b"item %d" % i)

    p = await apair_factory(server_setup=lambda t: t.subscribe(START_ID, count))
    got = [m.data async for m in p.client.messages(BinMessage(START_ID, b"300"))]
    assert got == items(300)


async def test_an_async_def_handler_converses_and_its_return_closes(
    apair_factory: Factory,
) -> None:
    async def doubler(stream: gofast.aio.Stream, msg: BinMessage) -> None:
        async for m in stream:
            await stream.send(BinMessage(ITEM_ID, m.data * 2), flush=True)

    p = await apair_factory(server_setup=lambda t: t.subscribe(START_ID, doubler))
    async with p.client.stream(BinMessage(START_ID, b"")) as s:
        for word in (b"a", b"bc", b"def"):
            await s.send(BinMessage(ITEM_ID, word), flush=True)
            reply = await s.recv(timeout=10)
            assert reply is not None and reply.data == word * 2
    # Our close ends its `async for`, its return closes its side: the end.
    assert await s.recv(timeout=10) is None
    await _no_exchanges_left(p)


async def test_a_returned_callback_gets_each_message_then_none(apair_factory: Factory) -> None:
    seen: list[bytes | None] = []
    ended = asyncio.Event()

    def handler(stream: gofast.aio.Stream, msg: BinMessage) -> Callable[[Any], None]:
        def on_msg(m: BinMessage | None) -> None:
            seen.append(None if m is None else m.data)
            if m is None:
                ended.set()

        return on_msg

    p = await apair_factory(server_setup=lambda t: t.subscribe(START_ID, handler))
    s = p.client.stream(BinMessage(START_ID, b""))
    for d in items(50):
        await s.send(BinMessage(ITEM_ID, d))
    await s.close()
    async with asyncio.timeout(10):
        await ended.wait()
    assert seen == [*items(50), None]


async def test_the_opener_receives_what_the_handler_sends_later(apair_factory: Factory) -> None:
    held: list[gofast.aio.Stream] = []

    def keep(stream: gofast.aio.Stream, msg: BinMessage) -> Callable[[Any], None]:
        held.append(stream)
        return lambda m: None

    p = await apair_factory(server_setup=lambda t: t.subscribe(START_ID, keep))
    s = p.client.stream(BinMessage(START_ID, b""))
    async with asyncio.timeout(10):
        while not held:
            await asyncio.sleep(0.002)
    for d in items(20):
        await held[0].send(BinMessage(ITEM_ID, d))
    await held[0].close()
    assert [m.data async for m in s] == items(20)
    await s.close()


async def test_a_failing_stream_handler_is_a_remote_error_for_the_opener(
    apair_factory: Factory,
) -> None:
    async def fails(stream: gofast.aio.Stream, msg: BinMessage) -> AsyncIterator[BinMessage]:
        yield BinMessage(ITEM_ID, b"first")
        raise ValueError("bad input")

    p = await apair_factory(
        server_setup=lambda t: t.subscribe(START_ID, fails),
        client_settings=EXT,
        server_settings=EXT,
    )
    got: list[bytes] = []
    with pytest.raises(gofast.RemoteError, match="bad input"):
        async for m in p.client.messages(BinMessage(START_ID, b"")):
            got.append(m.data)
    assert got == [b"first"]
    await _until(lambda: p.server.stats()["n_handler_errors"] == 1)


async def test_the_connections_end_cuts_an_open_stream(apair_factory: Factory) -> None:
    def quiet(stream: gofast.aio.Stream, msg: BinMessage) -> Callable[[Any], None]:
        return lambda m: None

    p = await apair_factory(server_setup=lambda t: t.subscribe(START_ID, quiet))
    s = p.client.stream(BinMessage(START_ID, b""))
    await p.server.aclose()
    with pytest.raises(gofast.ConnectionClosed, match="cut"):
        await s.recv(timeout=10)
    assert isinstance(s.error, gofast.ConnectionClosed)


async def test_send_after_close_is_stream_closed(apair_factory: Factory) -> None:
    p = await apair_factory(server_setup=lambda t: t.subscribe(START_ID, lambda s, m: None))
    s = p.client.stream(BinMessage(START_ID, b""))
    await s.close()
    await s.close()  # idempotent
    with pytest.raises(gofast.StreamClosed):
        await s.send(BinMessage(ITEM_ID, b""))


async def test_recv_timeout_raises_timeout(apair_factory: Factory) -> None:
    p = await apair_factory(server_setup=lambda t: t.subscribe(START_ID, lambda s, m: None))
    s = p.client.stream(BinMessage(START_ID, b""))
    with pytest.raises(gofast.Timeout):
        await s.recv(timeout=0.05)
    await s.close()


async def test_breaking_out_of_messages_closes_our_side(apair_factory: Factory) -> None:
    async def long(stream: gofast.aio.Stream, msg: BinMessage) -> AsyncIterator[BinMessage]:
        for i in range(10_000):
            yield BinMessage(ITEM_ID, b"%d" % i)

    p = await apair_factory(server_setup=lambda t: t.subscribe(START_ID, long))
    async for m in p.client.messages(BinMessage(START_ID, b"")):
        if m.data == b"10":
            break
    # An async generator is closed by the loop soon after it is dropped.
    await _until(lambda: p.client.stats()["n_txfin"] == 1)


async def test_a_stream_start_without_handler_ends_the_stream(apair: APair) -> None:
    """Under x-errors (on by default) the end is the peer's NoHandler."""
    got = []
    with pytest.raises(gofast.RemoteError) as e:
        async for m in apair.client.messages(BinMessage(START_ID, b"")):
            got.append(m)
    assert got == [] and e.value.remote_type == "NoHandler"
    await _until(lambda: apair.server.stats()["n_mdrops"] >= 1)


async def test_without_the_errors_extension_a_refused_stream_just_ends(
    apair_factory: Factory,
) -> None:
    p = await apair_factory(server_settings={"errors.extension": False})
    got = [m async for m in p.client.messages(BinMessage(START_ID, b""))]
    assert got == []
    await _until(lambda: p.server.stats()["n_mdrops"] >= 1)


async def test_many_streams_at_once(apair_factory: Factory) -> None:
    async def count(stream: gofast.aio.Stream, msg: BinMessage) -> AsyncIterator[BinMessage]:
        for i in range(int(msg.data)):
            yield BinMessage(ITEM_ID, b"item %d" % i)

    p = await apair_factory(server_setup=lambda t: t.subscribe(START_ID, count))

    async def one(n: int) -> list[bytes]:
        return [m.data async for m in p.client.messages(BinMessage(START_ID, b"%d" % n))]

    got = await asyncio.gather(*(one(n) for n in range(40)))
    assert got == [items(n) for n in range(40)]
    await _no_exchanges_left(p)


async def _until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.002)


async def _no_exchanges_left(p: APair) -> None:
    await _until(lambda: p.client._t._exchanges_in_use() == (0, 0))
    await _until(lambda: p.server._t._exchanges_in_use() == (0, 0))
