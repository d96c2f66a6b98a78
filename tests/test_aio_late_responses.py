"""The async twin of test_late_responses.py: a request given up (by its
timeout, or by cancelling its task) is not over on the peer's side. Its
late RESPONSE never reaches a newer request, nor a handler as the peer's
REQUEST; its opaque stays out of use until that RESPONSE arrives (then it
is dropped and counted) or the connection ends, and a range full of them
makes new requests fail at once with OpaqueExhausted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import gofast
from aio_wire import araw_server, until
from conftest import APair
from gofast import BinMessage
from wire import REQUEST

HELD_ID = 120  # the server holds these requests until told to answer

Factory = Callable[..., Awaitable[APair]]


class Holder:
    """A server handler that keeps REQUESTs, then answers each with its own
    payload (so a reply names the request it answers)."""

    def __init__(self) -> None:
        self.held: list[tuple[Any, bytes]] = []

    def __call__(self, stream: Any, msg: BinMessage) -> BinMessage | None:
        if msg.data.startswith(b"NEW"):
            return BinMessage(HELD_ID, b"re: " + msg.data)
        self.held.append((stream, msg.data))
        return None  # answered later

    def answer_all(self) -> None:
        held, self.held = self.held, []
        for stream, data in held:
            stream.respond(BinMessage(HELD_ID, b"re: " + data), flush=False)


async def late_pair(apair_factory: Factory, holder: Holder, **client_settings: Any) -> APair:
    got: list[BinMessage] = []
    p = await apair_factory(
        client_settings=client_settings or None,
        client_setup=lambda t: t.default_handler(lambda s, m: got.append(m)),
        server_setup=lambda t: t.subscribe(HELD_ID, holder),
        # The holder answers after its handler returned: that needs x-errors
        # off on the server (under it, the default, returning without a
        # reply fails the request at once with RemoteError NoResponse).
        server_settings={"errors.extension": False},
    )
    p.client_got = got  # type: ignore[attr-defined]
    return p


async def give_up(p: APair, msgs: list[BinMessage]) -> None:
    """Half by their own timeout, half by cancelling the awaiting task."""
    half = len(msgs) // 2
    timed = [p.client.request(m, timeout=0.5) for m in msgs[:half]]
    cancelled = [asyncio.ensure_future(p.client.request(m)) for m in msgs[half:]]
    results = await asyncio.gather(*timed, return_exceptions=True)
    assert all(isinstance(r, gofast.Timeout) for r in results), {type(r) for r in results}
    for f in cancelled:
        assert not f.done()
        f.cancel()
    results = await asyncio.gather(*cancelled, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)


async def test_ten_thousand_late_responses_reach_nobody(apair_factory: Factory) -> None:
    holder = Holder()
    p = await late_pair(apair_factory, holder)
    n = 10_000
    await give_up(p, [BinMessage(HELD_ID, f"old-{i}".encode()) for i in range(n)])
    await until(lambda: len(holder.held) == n, what="the server holding every request")
    assert p.client.stats()["n_timeouts"] == n
    # The whole range waits for late RESPONSEs: a new request fails at once.
    t0 = time.monotonic()
    with pytest.raises(gofast.OpaqueExhausted, match="timed-out"):
        await p.client.request(BinMessage(HELD_ID, b"NEW-0"), timeout=5)
    assert time.monotonic() - t0 < 1.0
    before = p.client.stats()
    holder.answer_all()
    p.server.flush()
    await until(lambda: p.client.stats()["n_mdrops"] - before["n_mdrops"] == n, what="late drops")
    after = p.client.stats()
    assert after["n_rxreq"] == before["n_rxreq"], "a late RESPONSE was taken for a REQUEST"
    assert after["n_handler_errors"] == 0
    assert p.client_got == []  # type: ignore[attr-defined]
    assert p.client._t._exchanges_in_use() == (0, 0)
    reply = await p.client.request(BinMessage(HELD_ID, b"NEW-1"), timeout=5)
    assert reply.data == b"re: NEW-1"


async def test_newer_requests_never_get_an_older_reply(apair_factory: Factory) -> None:
    holder = Holder()
    p = await late_pair(apair_factory, holder, **{"opaque.start": 10_000, "opaque.end": 10_003})
    await give_up(p, [BinMessage(HELD_ID, f"old-{i}".encode()) for i in range(4)])
    await until(lambda: len(holder.held) == 4, what="the server holding the requests")
    for i in range(10):
        with pytest.raises(gofast.OpaqueExhausted):
            await p.client.request(BinMessage(HELD_ID, f"NEW-{i}".encode()), timeout=5)
    holder.answer_all()
    p.server.flush()
    await until(lambda: p.client._t._exchanges_in_use() == (0, 0), what="late RESPONSEs freeing")
    replies = await asyncio.gather(
        *(p.client.request(BinMessage(HELD_ID, f"NEW-{i}".encode()), timeout=5) for i in range(3))
    )
    assert [r.data for r in replies] == [f"re: NEW-{i}".encode() for i in range(3)]
    assert p.client.stats()["n_mdrops"] == 4
    assert p.client_got == []  # type: ignore[attr-defined]


async def test_a_response_on_our_range_for_no_request_is_dropped() -> None:
    """A stray `81` frame on our own opaques answers nothing we asked: it is
    dropped and counted, never handed to a handler as the peer's REQUEST."""
    got: list[BinMessage] = []
    async with araw_server(setup=lambda t: t.default_handler(lambda s, m: got.append(m))) as (
        raw,
        t,
    ):
        start = t.settings["opaque.start"]
        for o in range(start, start + 5):
            await raw.send_frame(REQUEST, o, 100, b"stray")
        assert await raw.ping("after") == b"after"
        await until(lambda: t.stats()["n_mdrops"] == 5, what="the strays dropped")
        assert t.stats()["n_handler_errors"] == 0
        assert got == []
        assert not t.closed
