"""gofast.aio, one pair: the async twins of test_api.py (handshake, POST,
REQUEST/RESPONSE, built-ins, bad input, statistics, handler failures),
plus what only asyncio has: handlers on the loop, async handlers, loop
binding. Every test runs on the default loop and on uvloop, over TCP, a
Unix socket and TLS."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

import gofast
import gofast.aio
from aio_wire import until
from conftest import APair, LogRecords
from gofast import BinMessage

POST_ID = 200
ECHO_ID = 300
SILENT_ID = 301
SLOW_ID = 302

Factory = Callable[..., Awaitable[APair]]
EXT = {"errors.extension": True}
OFF = {"errors.extension": False}


def echo(stream: Any, msg: BinMessage) -> BinMessage | None:
    return msg if stream is not None else None


class Inbox:
    """What handlers got, on the loop: ``await inbox.get(n)``."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.threads: set[int] = set()
        self.loops: set[int] = set()
        self._changed = asyncio.Event()

    def __call__(self, stream: Any, msg: BinMessage) -> None:
        self.threads.add(threading.get_ident())
        self.loops.add(id(asyncio.get_running_loop()))
        self.items.append(msg)
        self._changed.set()

    async def get(self, n: int, timeout: float = 10.0) -> list[Any]:
        async with asyncio.timeout(timeout):
            while len(self.items) < n:
                self._changed.clear()
                await self._changed.wait()
        return list(self.items)


@dataclass
class Point(gofast.CborMessage, id=400):
    x: int
    y: int


@dataclass
class Other(gofast.CborMessage, id=401):
    z: int


async def test_handshake_returns_the_peers_whoami(apair_factory: Factory) -> None:
    p = await apair_factory(handshake=False)
    mine, theirs = await asyncio.gather(p.client.handshake(), p.server.handshake())
    assert mine.name == "server" and theirs.name == "client"
    assert p.client.peer == mine and p.client.peer_version == gofast.Version64(1)
    again = await p.client.whoami()
    assert again.name == "server"


async def test_post_runs_its_handler_on_the_loop_with_exact_bytes(apair_factory: Factory) -> None:
    inbox = Inbox()
    p = await apair_factory(server_setup=lambda t: t.subscribe(POST_ID, inbox))
    data = [os.urandom(n) for n in (0, 1, 100, 70_000)]
    for d in data:
        await p.client.post(BinMessage(POST_ID, d))
    p.client.flush()
    got = await inbox.get(len(data))
    assert [m.data for m in got] == data
    assert inbox.threads == {threading.get_ident()}
    assert inbox.loops == {id(asyncio.get_running_loop())}


async def test_request_returns_the_response(apair_factory: Factory) -> None:
    p = await apair_factory(server_setup=lambda t: t.subscribe(ECHO_ID, echo))
    reply = await p.client.request(BinMessage(ECHO_ID, b"hello"))
    assert isinstance(reply, BinMessage) and (reply.id, reply.data) == (ECHO_ID, b"hello")


async def test_request_decodes_with_a_response_type(apair_factory: Factory) -> None:
    p = await apair_factory(server_setup=lambda t: t.subscribe(Point, lambda s, m: m))
    got = await p.client.request(Point(1, 2), Point)
    assert got == Point(1, 2)
    with pytest.raises(gofast.ProtocolError, match="Other has ID 401"):
        await p.client.request(Point(3, 4), Other)


async def test_many_concurrent_requests_each_get_their_own_reply(apair_factory: Factory) -> None:
    p = await apair_factory(server_setup=lambda t: t.subscribe(ECHO_ID, echo))

    async def one(i: int) -> bytes:
        r = await p.client.request(BinMessage(ECHO_ID, b"%d" % i))
        return r.data

    got = await asyncio.gather(*(one(i) for i in range(500)))
    assert got == [b"%d" % i for i in range(500)]
    assert p.client._t._exchanges_in_use() == (0, 0)


async def test_an_async_request_handler_may_await_before_it_answers(
    apair_factory: Factory,
) -> None:
    gate = asyncio.Event()
    ran_on: list[int] = []

    async def slow(stream: Any, msg: BinMessage) -> BinMessage:
        ran_on.append(threading.get_ident())
        await gate.wait()
        return BinMessage(SLOW_ID, msg.data + b"!")

    async def later(stream: Any, msg: BinMessage) -> None:
        await asyncio.sleep(0)
        stream.respond(BinMessage(SLOW_ID, b"by respond"))

    def setup(t: Any) -> None:
        t.subscribe(SLOW_ID, slow)
        t.subscribe(ECHO_ID, later)

    p = await apair_factory(server_setup=setup)
    pending = asyncio.ensure_future(p.client.request(BinMessage(SLOW_ID, b"x")))
    # Others are served while that handler waits: the loop is not blocked.
    assert (await p.client.request(BinMessage(ECHO_ID, b""))).data == b"by respond"
    assert not pending.done()
    gate.set()
    assert (await pending).data == b"x!"
    assert ran_on == [threading.get_ident()]


async def test_async_post_handlers_run_and_their_failures_are_counted(
    apair_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    inbox = Inbox()

    async def handler(stream: Any, msg: BinMessage) -> None:
        await asyncio.sleep(0)
        if msg.data == b"boom":
            raise ValueError("boom")
        inbox(stream, msg)

    p = await apair_factory(server_setup=lambda t: t.subscribe(POST_ID, handler))
    with caplog.at_level(logging.ERROR, logger="gofast"):
        await p.client.post(BinMessage(POST_ID, b"boom"))
        await p.client.post(BinMessage(POST_ID, b"ok"), flush=True)
        await inbox.get(1)
        await until(lambda: p.server.stats()["n_handler_errors"] == 1)
    assert any("raised" in r.getMessage() for r in caplog.records)


async def test_a_failing_request_handler_is_a_remote_error(apair_factory: Factory) -> None:
    async def fails(stream: Any, msg: BinMessage) -> None:
        await asyncio.sleep(0)
        raise KeyError("nope")

    def fails_now(stream: Any, msg: BinMessage) -> None:
        raise ValueError("at once")

    def setup(t: Any) -> None:
        t.subscribe(SLOW_ID, fails)
        t.subscribe(ECHO_ID, fails_now)

    p = await apair_factory(server_setup=setup, client_settings=EXT, server_settings=EXT)
    with pytest.raises(gofast.RemoteError) as e:
        await p.client.request(BinMessage(SLOW_ID, b""))
    assert e.value.remote_type == "KeyError"
    with pytest.raises(gofast.RemoteError) as e:
        await p.client.request(BinMessage(ECHO_ID, b""))
    assert e.value.remote_type == "ValueError"
    assert p.server.stats()["n_handler_errors"] == 2


async def test_a_handler_returning_nothing_is_a_no_response_error(apair_factory: Factory) -> None:
    async def silent(stream: Any, msg: BinMessage) -> None:
        await asyncio.sleep(0)

    p = await apair_factory(
        server_setup=lambda t: t.subscribe(SILENT_ID, silent),
        client_settings=EXT,
        server_settings=EXT,
    )
    with pytest.raises(gofast.RemoteError) as e:
        await p.client.request(BinMessage(SILENT_ID, b""))
    assert e.value.remote_type == "NoResponse"


async def test_a_request_without_handler_is_refused_and_counted(apair_factory: Factory) -> None:
    p = await apair_factory(client_settings=EXT, server_settings=EXT)
    with pytest.raises(gofast.RemoteError) as e:
        await p.client.request(BinMessage(ECHO_ID, b""))
    assert e.value.remote_type == "NoHandler"
    await p.client.post(BinMessage(POST_ID, b""), flush=True)
    await until(lambda: p.server.stats()["n_mdrops"] == 2)


async def test_default_peers_raise_remote_error_for_every_failed_request(
    apair_factory: Factory,
) -> None:
    """Two peers with default settings (x-errors on): a raising handler, a
    missing one and one returning without a reply each raise RemoteError,
    not a Timeout."""

    async def fails(stream: Any, msg: BinMessage) -> None:
        raise KeyError("nope")

    async def silent(stream: Any, msg: BinMessage) -> None:
        await asyncio.sleep(0)

    def setup(t: Any) -> None:
        t.subscribe(SLOW_ID, fails)
        t.subscribe(SILENT_ID, silent)

    p = await apair_factory(server_setup=setup)
    assert p.client.peer.tags == ("x-errors",) and p.server.peer.tags == ("x-errors",)
    got = []
    for msg_id in (SLOW_ID, ECHO_ID, SILENT_ID):  # ECHO_ID has no handler here
        with pytest.raises(gofast.RemoteError) as e:
            await p.client.request(BinMessage(msg_id, b""), timeout=30)
        got.append(e.value.remote_type)
    assert got == ["KeyError", "NoHandler", "NoResponse"]
    assert p.client.stats()["n_timeouts"] == 0


@pytest.mark.parametrize("off", ["client", "server"])
async def test_without_the_errors_extension_a_failed_request_times_out(
    apair_factory: Factory, off: str
) -> None:
    """One side turned it off, the other left at the default (on)."""

    async def fails(stream: Any, msg: BinMessage) -> None:
        raise KeyError("nope")

    kw = {f"{off}_settings": OFF}
    p = await apair_factory(server_setup=lambda t: t.subscribe(SLOW_ID, fails), **kw)
    with pytest.raises(gofast.Timeout):
        await p.client.request(BinMessage(SLOW_ID, b""), timeout=0.2)
    assert p.client.stats()["n_timeouts"] == 1


async def test_default_and_batch_handlers(apair_factory: Factory) -> None:
    inbox = Inbox()
    batches: list[list[bytes]] = []

    def setup(t: Any) -> None:
        t.default_handler(inbox)
        t.subscribe_batch(POST_ID, lambda ms: batches.append([m.data for m in ms]))

    p = await apair_factory(server_setup=setup)
    for i in range(50):
        await p.client.post(BinMessage(POST_ID, b"%d" % i))
    await p.client.post(BinMessage(POST_ID + 1, b"other"), flush=True)
    got = await inbox.get(1)
    assert got[0].data == b"other"
    await until(lambda: sum(map(len, batches)) == 50)
    assert [d for b in batches for d in b] == [b"%d" % i for i in range(50)]


async def test_ping_echoes(apair: APair) -> None:
    assert await apair.client.ping("héllo") == "héllo"
    assert await apair.server.ping() == ""
    with pytest.raises(gofast.UsageError):
        await apair.client.ping("x" * 70_000)


@pytest.mark.parametrize(
    "bad", [BinMessage(0, b""), BinMessage(0x1000, b""), BinMessage(0x100F, b"")]
)
async def test_reserved_ids_and_id_zero_are_refused(apair: APair, bad: BinMessage) -> None:
    with pytest.raises(gofast.UsageError):
        await apair.client.request(bad)
    with pytest.raises(gofast.UsageError):
        await apair.client.post(bad)
    with pytest.raises(gofast.UsageError):
        apair.client.subscribe(bad.id, echo)


@pytest.mark.parametrize("obj", [None, 42, b"raw", "text", object()])
async def test_objects_that_are_not_messages_raise_type_error(apair: APair, obj: object) -> None:
    with pytest.raises(TypeError):
        await apair.client.post(obj)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await apair.client.request(obj)  # type: ignore[arg-type]


async def test_a_message_over_frame_max_is_refused(apair: APair) -> None:
    big = BinMessage(POST_ID, bytes(apair.client.settings["frame.max"]))
    with pytest.raises(gofast.UsageError):
        await apair.client.post(big)
    with pytest.raises(gofast.UsageError):
        await apair.client.request(BinMessage(ECHO_ID, big.data))


async def test_request_before_the_handshake_is_a_usage_error(apair_factory: Factory) -> None:
    p = await apair_factory(handshake=False)
    with pytest.raises(gofast.UsageError, match="handshake"):
        await p.client.request(BinMessage(ECHO_ID, b""))


async def test_stats_agree_across_the_pair(apair_factory: Factory) -> None:
    inbox = Inbox()

    def setup(t: Any) -> None:
        t.subscribe(POST_ID, inbox)
        t.subscribe(ECHO_ID, echo)

    p = await apair_factory(server_setup=setup)
    for _ in range(10):
        await p.client.post(BinMessage(POST_ID, b"p"))
    for _ in range(5):
        await p.client.request(BinMessage(ECHO_ID, b"r"))
    await inbox.get(10)
    c, s = p.client.stats(), p.server.stats()
    assert set(c) == set(gofast.STAT_NAMES)
    assert c["n_txpost"] == s["n_rxpost"] == 10
    assert c["n_txreq"] - 1 == s["n_rxreq"] - 1 == 5  # each side's whoami
    assert s["n_txresp"] == c["n_rxresp"]


async def test_using_the_transport_from_another_loop_is_a_usage_error(apair: APair) -> None:
    def elsewhere() -> None:
        async def use() -> None:
            with pytest.raises(gofast.UsageError, match="another event loop"):
                await apair.client.post(BinMessage(POST_ID, b""))
            with pytest.raises(gofast.UsageError, match="another event loop"):
                await apair.client.request(BinMessage(ECHO_ID, b""))
            with pytest.raises(gofast.UsageError, match="another event loop"):
                await apair.client.ping()

        asyncio.run(use())

    await asyncio.to_thread(elsewhere)
    with pytest.raises(gofast.UsageError, match="outside its event loop"):
        await asyncio.to_thread(apair.client._t._aio_check)
    assert await apair.client.ping("still fine") == "still fine"


async def test_handler_logs_go_to_the_gofast_logger(apair_factory: Factory) -> None:
    records = LogRecords()
    logging.getLogger("gofast").addHandler(records)
    try:

        def boom(stream: Any, msg: BinMessage) -> None:
            raise RuntimeError("handler failed")

        p = await apair_factory(server_setup=lambda t: t.subscribe(POST_ID, boom))
        await p.client.post(BinMessage(POST_ID, b""), flush=True)
        await until(lambda: bool(records.at(logging.ERROR, "raised")))
    finally:
        logging.getLogger("gofast").removeHandler(records)
