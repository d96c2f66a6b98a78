"""Large messages through gofast.aio: the async twins of
test_large_messages.py. ``await post()`` lends a large ``bytes`` to the
writer as the sync ``post()`` does; what users rely on: the bytes reach
the loop's handlers exactly and in order with the small ones around them,
through every way of sending (compressed or not, over TCP, Unix and TLS),
and the writer lets go of the sender's objects once they are sent, or
once a close gives them up (failing the post that waits for room)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import gofast
import gofast.aio
from aio_wire import AInbox, araw_server, until
from conftest import APair
from gofast import BinMessage
from test_large_messages import (
    DATA_ID,
    ECHO_ID,
    LEND_MIN,
    SIZES,
    STREAM_ID,
    Blob,
    BlobMessage,
    payload,
)

Factory = Callable[..., Awaitable[APair]]


def collecting(inbox: AInbox) -> Callable[[Any, BinMessage], None]:
    return lambda _stream, msg: inbox.append(msg.data)


@pytest.mark.parametrize("tags", ["", "gzip"])
async def test_posts_of_every_size_arrive_exactly_and_in_order(
    apair_factory: Factory, tags: str
) -> None:
    inbox = AInbox()
    p = await apair_factory(
        server_setup=lambda t: t.subscribe(DATA_ID, collecting(inbox)),
        server_settings={"tags": tags},
    )
    want = [payload(i, SIZES[i % len(SIZES)]) for i in range(3 * len(SIZES))]
    for data in want:
        # The message object, and the bytes with it, may go right away.
        await p.client.post(BinMessage(DATA_ID, data[:]))
    p.client.flush()
    assert await inbox.wait_for(len(want), 30) == want


async def test_large_bytes_subclasses_arrive_too(apair_factory: Factory) -> None:
    inbox = AInbox()
    p = await apair_factory(server_setup=lambda t: t.subscribe(DATA_ID, collecting(inbox)))
    want = [payload(i, 70_000) for i in range(5)]
    Blob.deleted = 0
    for i, data in enumerate(want):
        await p.client.post(BlobMessage(data))
        # Copied, so nothing holds it once the post is queued.
        assert Blob.deleted == i + 1
    p.client.flush()
    assert await inbox.wait_for(len(want), 30) == want


async def test_large_requests_responses_and_streams(apair_factory: Factory) -> None:
    """An awaited REQUEST and its RESPONSE from an ``async def`` handler,
    and STREAM messages both ways (``await send()``, ``async for``), each
    large."""
    got_on_stream = AInbox()

    async def on_echo(stream: Any, msg: BinMessage) -> BinMessage:
        await asyncio.sleep(0)
        return BinMessage(ECHO_ID, msg.data[::-1])

    async def on_stream(stream: gofast.aio.Stream, msg: BinMessage) -> None:
        # Sends while it reads; returning closes our side.
        got_on_stream.append(msg.data)

        async def pump() -> None:
            for i in range(4):
                await stream.send(BinMessage(STREAM_ID, payload(100 + i, 200_000)))

        sending = asyncio.ensure_future(pump())
        async for m in stream:
            got_on_stream.append(m.data)
        await sending

    def server_setup(t: gofast.aio.Transport) -> None:
        t.subscribe(ECHO_ID, on_echo)
        t.subscribe(STREAM_ID, on_stream)

    p = await apair_factory(server_setup=server_setup)
    for i, size in enumerate([LEND_MIN, 500_000]):
        data = payload(i, size)
        assert (await p.client.request(BinMessage(ECHO_ID, data), timeout=10)).data == data[::-1]

    stream = p.client.stream(BinMessage(STREAM_ID, payload(7, 70_000)))
    for i in range(3):
        await stream.send(BinMessage(STREAM_ID, payload(200 + i, 90_000)))
    await stream.close()
    async with asyncio.timeout(30):
        from_server = [m.data async for m in stream]
    assert stream.error is None
    assert from_server == [payload(100 + i, 200_000) for i in range(4)]
    assert await got_on_stream.wait_for(4, 30) == [payload(7, 70_000)] + [
        payload(200 + i, 90_000) for i in range(3)
    ]
    await until(lambda: p.client._t._exchanges_in_use() == (0, 0), what="the stream to end")


async def test_the_writer_lets_go_of_sent_bytes(apair_factory: Factory) -> None:
    inbox = AInbox()
    p = await apair_factory(server_setup=lambda t: t.subscribe(DATA_ID, collecting(inbox)))
    data = payload(1, 100_000)
    msg = BinMessage(DATA_ID, data)
    before = sys.getrefcount(data)
    for _ in range(50):
        await p.client.post(msg)
    p.client.flush()
    assert len(await inbox.wait_for(50, 30)) == 50
    # References dropped on the writer thread are released the next time
    # any thread enters the extension (here: stats()).
    await until(
        lambda: p.client.stats()["n_flushes"] >= 0 and sys.getrefcount(data) == before,
        what=f"references released ({sys.getrefcount(data)} != {before})",
    )


async def test_aclose_fails_the_waiting_post_and_lets_go_of_large_messages() -> None:
    """A peer that reads nothing: once the socket is full, lent messages
    wait in the queue and ``await post()`` waits for room (the loop runs
    on); ``aclose()`` fails that await with ConnectionClosed and drops them."""
    async with araw_server({"pending.max": 1 << 20}) as (_raw, t):
        data = payload(3, 100_000)
        msg = BinMessage(DATA_ID, data)
        before = sys.getrefcount(data)
        posted = 0

        async def poster() -> None:
            nonlocal posted
            while True:
                await t.post(msg)
                posted += 1

        task = asyncio.ensure_future(poster())
        async with asyncio.timeout(10):
            while True:
                # Nothing more reaches the socket, several are queued (lent),
                # and the post is waiting: the queue is full.
                sent, n = t.stats()["n_txbyte"], posted
                await asyncio.sleep(0.05)
                if (t.stats()["n_txbyte"], posted) == (sent, n) and (
                    sys.getrefcount(data) > before + 5
                ):
                    break
        assert not task.done()
        await t.aclose()  # lingers, then gives up on the queue
        done, _ = await asyncio.wait([task], timeout=10)
        assert done, "the waiting post hangs after aclose()"
        with pytest.raises(gofast.ConnectionClosed):
            task.result()
        assert t.stats()["n_txbyte"] < posted * len(data), "all were sent"
        await until(
            lambda: gofast.stats() is not None and sys.getrefcount(data) == before,
            what=f"references released ({sys.getrefcount(data)} != {before})",
        )
