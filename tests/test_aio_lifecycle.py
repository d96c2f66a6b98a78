"""gofast.aio over time: cancellation, timeouts (its own and
``asyncio.timeout``), close semantics, the peer's death, backpressure (the
loop stays free while a post waits for room), and mixed pairs (an asyncio
transport against a sync one, either way round)."""

from __future__ import annotations

import asyncio
import math
import select
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import gofast
import gofast.aio
from aio_wire import resume_loop_taking, stop_loop_taking, until
from conftest import APair, make_apair
from gofast import BinMessage

ECHO_ID = 300
HOLD_ID = 301
POST_ID = 200
#: Settings of a server whose handlers answer after returning (Held): without
#: x-errors, which is on by default and would fail such a request at once
#: (RemoteError NoResponse) instead of leaving it to its timeout.
HOLDS = {"errors.extension": False}

Factory = Callable[..., Awaitable[APair]]


def echo(stream: Any, msg: BinMessage) -> BinMessage | None:
    return msg if stream is not None else None


class Held:
    """A REQUEST handler that answers only when told (``release()``), after
    it returned: its server needs HOLDS."""

    def __init__(self) -> None:
        self.streams: list[Any] = []

    def __call__(self, stream: Any, msg: BinMessage) -> None:
        self.streams.append((stream, msg))

    def release(self) -> None:
        for stream, msg in self.streams:
            stream.respond(msg)
        self.streams.clear()


def held_setup(held: Held) -> Callable[[Any], object]:
    def setup(t: Any) -> None:
        t.subscribe(HOLD_ID, held)
        t.subscribe(ECHO_ID, echo)

    return setup


async def test_cancelling_a_request_gives_it_up_and_drops_its_late_response(
    apair_factory: Factory,
) -> None:
    held = Held()
    p = await apair_factory(server_setup=held_setup(held), server_settings=HOLDS)
    task = asyncio.ensure_future(p.client.request(BinMessage(HOLD_ID, b"late")))
    await until(lambda: len(held.streams) == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    before = p.client.stats()
    assert before["n_timeouts"] == 1
    held.release()
    await until(lambda: p.client.stats()["n_mdrops"] == before["n_mdrops"] + 1)
    # The opaque is free again, and the transport works on.
    assert (await p.client.request(BinMessage(ECHO_ID, b"next"))).data == b"next"
    await until(lambda: p.client._t._exchanges_in_use() == (0, 0))


async def test_a_cancel_after_the_response_arrived_still_counts_it_as_dropped(
    apair_factory: Factory,
) -> None:
    p = await apair_factory(server_setup=lambda t: t.subscribe(ECHO_ID, echo))
    stop_loop_taking(p.client)
    task = asyncio.ensure_future(p.client.request(BinMessage(ECHO_ID, b"x")))
    sock_fd = p.client._t._aio_socket_fd()
    if sock_fd >= 0:  # the loop reads the socket: the RESPONSE waits there
        await until(lambda: bool(select.select([sock_fd], [], [], 0)[0]))
    else:  # a reader thread took it (whoami, then ours): it waits in the queue
        await until(lambda: p.client.stats()["n_rxresp"] == 2)
    drops = p.client.stats()["n_mdrops"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    resume_loop_taking(p.client)
    assert (await p.client.request(BinMessage(ECHO_ID, b"y"))).data == b"y"
    st = p.client.stats()
    assert (st["n_timeouts"], st["n_mdrops"]) == (1, drops + 1)
    assert p.client._t._exchanges_in_use() == (0, 0)


async def test_asyncio_timeout_cancels_the_request(apair_factory: Factory) -> None:
    held = Held()
    p = await apair_factory(server_setup=held_setup(held), server_settings=HOLDS)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await p.client.request(BinMessage(HOLD_ID, b""))
    assert p.client.stats()["n_timeouts"] == 1
    held.release()
    await until(lambda: p.client._t._exchanges_in_use() == (0, 0))


async def test_the_request_timeout_raises_timeout_and_counts(apair_factory: Factory) -> None:
    held = Held()
    p = await apair_factory(server_setup=held_setup(held), server_settings=HOLDS)
    short = asyncio.ensure_future(p.client.request(BinMessage(HOLD_ID, b"a"), timeout=0.05))
    long = asyncio.ensure_future(p.client.request(BinMessage(HOLD_ID, b"b"), timeout=math.inf))
    with pytest.raises(gofast.Timeout):
        await short
    assert not long.done()
    assert p.client.stats()["n_timeouts"] == 1
    held.release()
    assert (await long).data == b"b"


async def test_the_request_timeout_setting_is_the_default(apair_factory: Factory) -> None:
    held = Held()
    p = await apair_factory(
        server_setup=held_setup(held),
        server_settings=HOLDS,
        client_settings={"request.timeout": 0.05},
    )
    with pytest.raises(gofast.Timeout):
        await p.client.request(BinMessage(HOLD_ID, b""))
    with pytest.raises(gofast.UsageError):
        await p.client.request(BinMessage(ECHO_ID, b""), timeout=-1)


async def test_close_fails_pending_requests_and_later_calls(apair_factory: Factory) -> None:
    held = Held()
    p = await apair_factory(server_setup=held_setup(held), server_settings=HOLDS)
    pending = [
        asyncio.ensure_future(p.client.request(BinMessage(HOLD_ID, b"%d" % i))) for i in range(5)
    ]
    await until(lambda: len(held.streams) == 5)
    await p.client.aclose()
    for f in pending:
        with pytest.raises(gofast.ConnectionClosed):
            await f
    assert p.client.closed
    with pytest.raises(gofast.ConnectionClosed):
        await p.client.post(BinMessage(POST_ID, b""))
    with pytest.raises(gofast.ConnectionClosed):
        await p.client.request(BinMessage(ECHO_ID, b""))
    await p.client.aclose()  # idempotent
    p.client.close()
    await p.server.wait_closed()  # the peer learns too
    assert p.server.closed


async def test_the_peers_close_fails_pending_requests(apair_factory: Factory) -> None:
    held = Held()
    p = await apair_factory(server_setup=held_setup(held), server_settings=HOLDS)
    pending = asyncio.ensure_future(p.client.request(BinMessage(HOLD_ID, b"")))
    await until(lambda: len(held.streams) == 1)
    p.server.close()
    with pytest.raises(gofast.ConnectionClosed):
        await pending
    await p.client.wait_closed()


async def test_async_with_closes(link: str) -> None:
    p = await make_apair(link=link)
    async with p.client as c, p.server:
        assert await c.ping("x") == "x"
    assert p.client.closed and p.server.closed


async def test_a_post_waits_for_room_without_blocking_the_loop(apair_factory: Factory) -> None:
    small = {"pending.max": 64 * 1024}
    reading = asyncio.Event()
    got: list[int] = []

    p = await apair_factory(client_settings=small)
    # The server's loop is this loop: stop its taking, so the server reads
    # nothing, the kernel buffers fill and the client's queue fills.
    stop_loop_taking(p.server)
    p.server._t._subscribe(POST_ID, lambda s, m: got.append(len(m.data)))
    sent = 0
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while not reading.is_set():
            ticks += 1
            await asyncio.sleep(0.001)

    tick = asyncio.ensure_future(ticker())
    data = b"x" * 4096

    async def flood() -> None:
        nonlocal sent
        while True:
            await p.client.post(BinMessage(POST_ID, data))
            sent += 1

    flooding = asyncio.ensure_future(flood())
    try:
        # Blocked: sent stops moving, and the loop still runs the ticker.
        last = -1
        while sent != last:
            last = sent
            await asyncio.sleep(0.2)
        ticks_then = ticks
        await asyncio.sleep(0.05)
        assert ticks > ticks_then, "the loop was blocked by a waiting post"
        assert not flooding.done()
    finally:
        # The server reads again: the waiting post goes through.
        resume_loop_taking(p.server)
    await until(lambda: sent > last + 10)
    flooding.cancel()
    reading.set()
    await tick
    p.client.flush()
    await until(lambda: len(got) >= sent)
    assert set(got) == {4096}


@pytest.mark.parametrize("sync", ["client", "server"])
async def test_an_asyncio_transport_talks_to_a_sync_one(link: str, sync: str) -> None:
    got: list[bytes] = []

    def setup(t: Any) -> None:
        t.subscribe(ECHO_ID, echo)
        t.subscribe(POST_ID, lambda s, m: got.append(m.data))

    p = await make_apair(link=link, sync=sync, client_setup=setup, server_setup=setup)
    try:
        a, s = (p.server, p.client) if sync == "client" else (p.client, p.server)
        assert isinstance(a, gofast.aio.Transport) and isinstance(s, gofast.Transport)
        assert (await a.request(BinMessage(ECHO_ID, b"from aio"))).data == b"from aio"
        reply = await asyncio.to_thread(s.request, BinMessage(ECHO_ID, b"from sync"))
        assert reply.data == b"from sync"
        await a.post(BinMessage(POST_ID, b"p1"), flush=True)
        await asyncio.to_thread(s.post, BinMessage(POST_ID, b"p2"), True)
        await until(lambda: sorted(got) == [b"p1", b"p2"])
        assert await a.ping("ok") == "ok"
    finally:
        await p.close()
