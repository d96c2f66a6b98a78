"""gofast.aio closing: the async twins of test_close.py and
test_close_releases.py. ``close()``/``aclose()`` are idempotent; every
await in flight fails with ConnectionClosed (also a send waiting for room),
calls after the end raise it, open streams are cut on both sides, what is
queued is flushed first, closing works from a handler, and a closed
transport lets go of its socket, its eventfd and its threads at once (kept
referenced or dropped). Every test runs on both loops; most over TCP, a
Unix socket and TLS."""

from __future__ import annotations

import asyncio
import gc
import math
import os
import resource
import subprocess
import sys
import textwrap
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import gofast
import gofast.aio
from aio_wire import resume_loop_taking, stop_loop_taking, until
from conftest import APair, make_apair
from gofast import BinMessage

POST_ID = 700
SILENT_ID = 701
STREAM_ID = 702
CLOSE_ID = 703
ECHO_ID = 704
#: Settings of a server whose handlers hold requests and return without
#: replying: without x-errors (on by default, it would fail each such request
#: at once with RemoteError NoResponse, where these tests need it pending).
HOLDS = {"errors.extension": False}

Factory = Callable[..., Awaitable[APair]]
TESTS = os.path.dirname(os.path.abspath(__file__))


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def gofast_thread_ids() -> set[str]:
    """The task ids of the transports' own threads (named gofast-rx-*/
    gofast-tx-*; the loop's executor threads live as long as the loop and
    are not counted). A test may compare sets, so that a thread of an
    earlier test still ending does not count as one of its own."""
    ids = set()
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/comm") as f:
                if f.read().startswith("gofast-"):
                    ids.add(task)
        except OSError:  # ended meanwhile (ENOENT or ESRCH)
            pass
    return ids


def gofast_threads() -> int:
    return len(gofast_thread_ids())


def echo(stream: Any, msg: BinMessage) -> BinMessage | None:
    return msg if stream is not None else None


class Held:
    """A REQUEST handler that keeps each request and never answers (its
    server needs HOLDS)."""

    def __init__(self) -> None:
        self.streams: list[Any] = []

    def __call__(self, stream: Any, msg: BinMessage) -> None:
        self.streams.append(stream)


async def close(t: gofast.aio.Transport, how: str) -> None:
    if how == "aclose":
        await t.aclose()
    else:
        t.close()


@pytest.mark.parametrize("how", ["aclose", "close"])
async def test_close_is_idempotent_and_the_peer_learns(apair: APair, how: str) -> None:
    assert not apair.client.closed
    await close(apair.client, how)
    assert apair.client.closed
    await apair.client.aclose()
    apair.client.close()
    await close(apair.client, how)
    assert apair.client.closed
    async with asyncio.timeout(10):
        await apair.client.wait_closed()
        await apair.server.wait_closed()  # the peer sees the close
    assert apair.server.closed
    await apair.server.aclose()


async def test_concurrent_acloses_all_return(apair: APair) -> None:
    async with asyncio.timeout(10):
        await asyncio.gather(apair.client.aclose(), apair.client.aclose(), apair.server.aclose())
    assert apair.client.closed and apair.server.closed


@pytest.mark.parametrize("side", ["client", "server"])
async def test_calls_after_close_raise_connection_closed(apair: APair, side: str) -> None:
    t: gofast.aio.Transport = getattr(apair, side)
    await t.aclose()
    msg = BinMessage(POST_ID, b"x")

    async def opened_and_sent() -> None:
        s = t.stream(msg)
        await s.send(msg)

    async def iterated() -> None:
        async for _ in t.messages(msg):
            pass

    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: t.post(msg),
        lambda: t.post(msg, flush=True),
        lambda: t.request(msg, timeout=1),
        lambda: t.ping("x", timeout=1),
        lambda: t.whoami(timeout=1),
        lambda: t.handshake(1),
        opened_and_sent,
        iterated,
    ]
    for call in calls:
        with pytest.raises(gofast.ConnectionClosed) as err:
            async with asyncio.timeout(5):
                await call()
        assert isinstance(err.value, ConnectionError)
    with pytest.raises(gofast.ConnectionClosed):
        t.flush()


@pytest.mark.parametrize("how", ["aclose", "close"])
async def test_close_fails_every_await_in_flight_promptly(apair_factory: Factory, how: str) -> None:
    held = Held()

    def setup(t: Any) -> None:
        t.subscribe(SILENT_ID, held)
        t.subscribe(STREAM_ID, lambda s, m: lambda m: None)  # keeps it open

    p = await apair_factory(server_setup=setup, server_settings=HOLDS)
    requests = [
        asyncio.ensure_future(p.client.request(BinMessage(SILENT_ID, b"%d" % i), timeout=math.inf))
        for i in range(5)
    ]
    stream = p.client.stream(BinMessage(STREAM_ID, b""))
    receiving = asyncio.ensure_future(stream.recv())
    iterating = asyncio.ensure_future(_drain(p.client.messages(BinMessage(STREAM_ID, b""))))
    await until(lambda: len(held.streams) == 5, what="the requests reach the server")
    await until(lambda: p.server._t._exchanges_in_use()[1] == 2, what="the streams open")
    t0 = time.monotonic()
    await close(p.client, how)
    for f in requests:
        with pytest.raises(gofast.ConnectionClosed):
            await f
    for f in (receiving, iterating):
        with pytest.raises(gofast.ConnectionClosed, match="closed by this side"):
            await f
    assert time.monotonic() - t0 < 5
    assert isinstance(stream.error, gofast.ConnectionClosed)
    assert p.client._t._exchanges_in_use() == (0, 0)


async def _drain(messages: Any) -> None:
    async for _ in messages:
        pass


async def test_close_fails_sends_waiting_for_room(apair_factory: Factory) -> None:
    p = await apair_factory(
        client_settings={"pending.max": 64 * 1024},
        server_setup=lambda t: t.subscribe(STREAM_ID, lambda s, m: lambda m: None),
        # ECHO_ID has no handler here: a request the server reads before its
        # reader is removed must stay unanswered, not fail with NoHandler.
        server_settings=HOLDS,
    )
    stop_loop_taking(p.server)  # the server reads nothing: queues fill
    data = b"x" * 4096
    stream = p.client.stream(BinMessage(STREAM_ID, b""))

    async def flood(send: Callable[[], Awaitable[object]]) -> None:
        while True:
            await send()

    floods = [
        asyncio.ensure_future(flood(lambda: p.client.post(BinMessage(POST_ID, data)))),
        asyncio.ensure_future(flood(lambda: stream.send(BinMessage(STREAM_ID, data)))),
        asyncio.ensure_future(flood(lambda: p.client.request(BinMessage(ECHO_ID, data)))),
    ]
    try:
        sent = -1
        while p.client.stats()["n_txpost"] != sent:  # until the posts stop going out
            sent = p.client.stats()["n_txpost"]
            await asyncio.sleep(0.2)
        assert not any(f.done() for f in floods)
        t0 = time.monotonic()
        await p.client.aclose()  # flushes what it can (the peer reads nothing), then ends
        for f in floods:
            with pytest.raises(gofast.ConnectionClosed):
                async with asyncio.timeout(10):
                    await f
        assert time.monotonic() - t0 < 5
    finally:
        for f in floods:
            f.cancel()
        resume_loop_taking(p.server)


@pytest.mark.parametrize("shape", ["callback", "async def"])
@pytest.mark.parametrize("closing", ["client", "server"])
async def test_close_ends_open_streams_on_both_sides(
    apair_factory: Factory, closing: str, shape: str
) -> None:
    server_got: list[Any] = []
    server_ended = asyncio.Event()

    def callback(stream: gofast.aio.Stream, msg: BinMessage) -> Callable[[Any], None]:
        def on_msg(m: BinMessage | None) -> None:
            server_got.append(m)
            if m is None:
                server_ended.set()

        return on_msg

    async def conversation(stream: gofast.aio.Stream, msg: BinMessage) -> None:
        try:
            async for m in stream:
                server_got.append(m)
        except gofast.ConnectionClosed as e:
            server_got.append(e)
        finally:
            server_ended.set()

    handler = callback if shape == "callback" else conversation
    p = await apair_factory(server_setup=lambda t: t.subscribe(STREAM_ID, handler))
    stream = p.client.stream(BinMessage(STREAM_ID, b""))
    reading = asyncio.ensure_future(_drain(stream))
    await until(lambda: p.server._t._exchanges_in_use()[1] == 1, what="the stream accepted")
    await getattr(p, closing).aclose()
    with pytest.raises(gofast.ConnectionClosed):
        async with asyncio.timeout(10):
            await reading
    async with asyncio.timeout(10):
        await server_ended.wait()
        await p.client.wait_closed()
        await p.server.wait_closed()
    if shape == "callback":
        assert server_got == [None]  # a callback gets None, as at any end
    else:
        assert len(server_got) == 1 and isinstance(server_got[0], gofast.ConnectionClosed)


async def test_the_peer_closing_fails_our_pending_requests_and_closes_us(
    apair_factory: Factory,
) -> None:
    held = Held()
    p = await apair_factory(
        server_setup=lambda t: t.subscribe(SILENT_ID, held), server_settings=HOLDS
    )
    pending = [
        asyncio.ensure_future(p.client.request(BinMessage(SILENT_ID, b""), timeout=math.inf))
        for _ in range(3)
    ]
    await until(lambda: len(held.streams) == 3, what="the requests reach the server")
    await p.server.aclose()
    for f in pending:
        with pytest.raises(gofast.ConnectionClosed):
            async with asyncio.timeout(10):
                await f
    async with asyncio.timeout(10):
        await p.client.wait_closed()
    assert p.client.closed
    with pytest.raises(gofast.ConnectionClosed):
        await p.client.post(BinMessage(POST_ID, b""))
    assert p.client._t._exchanges_in_use() == (0, 0)


async def test_aclose_flushes_what_is_queued(apair_factory: Factory) -> None:
    n = 10_010  # ten more than whole batches: those wait for a flush
    received: list[int] = []

    p = await apair_factory(
        client_settings={"batchsize": 1000, "flush.period": None},
        server_setup=lambda t: t.subscribe(
            POST_ID, lambda s, m: received.append(int.from_bytes(m.data, "big"))
        ),
    )
    for i in range(n):
        await p.client.post(BinMessage(POST_ID, i.to_bytes(4, "big")))
    await p.client.aclose()
    await until(lambda: len(received) == n, what=f"all {n} posts arriving")
    assert received == list(range(n))
    assert p.server.stats()["n_rxpost"] == n


@pytest.mark.parametrize("shape", ["close() in a handler", "await aclose() in an async handler"])
@pytest.mark.parametrize("side", ["server", "client"])
async def test_closing_from_inside_a_handler(apair_factory: Factory, side: str, shape: str) -> None:
    holder: list[gofast.aio.Transport] = []
    closed_in_handler = asyncio.Event()
    elapsed: list[float] = []

    def close_me(stream: Any, msg: BinMessage) -> None:
        t0 = time.monotonic()
        holder[0].close()
        elapsed.append(time.monotonic() - t0)
        closed_in_handler.set()

    async def aclose_me(stream: Any, msg: BinMessage) -> None:
        t0 = time.monotonic()
        await holder[0].aclose()
        elapsed.append(time.monotonic() - t0)
        closed_in_handler.set()

    def setup(t: Any) -> None:
        holder.append(t)
        t.subscribe(CLOSE_ID, close_me if shape.startswith("close()") else aclose_me)

    p = await apair_factory(**{f"{side}_setup": setup})
    me, peer = (p.server, p.client) if side == "server" else (p.client, p.server)
    await peer.post(BinMessage(CLOSE_ID, b""), flush=True)
    async with asyncio.timeout(10):
        await closed_in_handler.wait()
        await peer.wait_closed()  # the peer sees the close
    assert elapsed[0] < 5
    assert me.closed
    await me.aclose()  # from outside, after: returns at once


async def test_closing_from_inside_a_stream_callback(apair_factory: Factory) -> None:
    holder: list[gofast.aio.Transport] = []
    got: list[BinMessage | None] = []

    def handler(stream: gofast.aio.Stream, msg: BinMessage) -> Callable[[Any], None]:
        def on_msg(m: BinMessage | None) -> None:
            got.append(m)
            if m is not None:
                holder[0].close()

        return on_msg

    def setup(t: Any) -> None:
        holder.append(t)
        t.subscribe(STREAM_ID, handler)

    p = await apair_factory(server_setup=setup)
    s = p.client.stream(BinMessage(STREAM_ID, b""))
    await s.send(BinMessage(STREAM_ID, b"close now"), flush=True)
    await until(lambda: len(got) == 2, what="the message, then the stream's end")
    assert got == [BinMessage(STREAM_ID, b"close now"), None]
    async with asyncio.timeout(10):
        await p.client.wait_closed()


async def test_async_with_closes_on_exception(link: str) -> None:
    p = await make_apair(link=link)
    with pytest.raises(RuntimeError):
        async with p.client as c:
            assert await c.ping("in context") == "in context"
            raise RuntimeError("leave the block")
    assert p.client.closed
    async with asyncio.timeout(10):
        await p.server.wait_closed()
    await p.server.aclose()


async def test_close_without_handshake(apair_factory: Factory) -> None:
    p = await apair_factory(handshake=False)
    async with asyncio.timeout(10):
        await p.client.aclose()
        await p.server.aclose()
    assert p.client.closed and p.server.closed
    with pytest.raises(gofast.ConnectionClosed):
        await p.client.handshake(1.0)


async def test_aclose_wait_closed_and_recv_from_another_loop_are_usage_errors(
    apair_factory: Factory,
) -> None:
    """Nothing could ever deliver there: refused, never a hang nor an
    error about a future of another loop."""
    p = await apair_factory(server_setup=lambda t: t.subscribe(STREAM_ID, lambda s, m: None))
    stream = p.client.stream(BinMessage(STREAM_ID, b""))

    def elsewhere() -> None:
        async def use() -> None:
            for call in (p.client.aclose, p.client.wait_closed, stream.recv):
                with pytest.raises(gofast.UsageError, match="another event loop"):
                    async with asyncio.timeout(5):
                        await call()

        asyncio.run(use())

    await asyncio.to_thread(elsewhere)
    assert not p.client.closed
    assert await p.client.ping("still fine") == "still fine"


# ---- what a closed transport keeps (test_close_releases.py) ------------------


async def test_closed_transports_hold_no_fd_nor_thread(apair_factory: Factory) -> None:
    gc.collect()
    base_fds, base_threads = fds(), gofast_threads()
    pairs = [
        await apair_factory(server_setup=lambda t: t.subscribe(STREAM_ID, lambda s, m: None))
        for _ in range(3)
    ]
    for p in pairs:
        p.client.stream(BinMessage(STREAM_ID, b""))
        assert await p.client.ping("x") == "x"
    # A socket and an eventfd per transport, and a writer thread (each
    # names itself as it starts); a reader thread only over TLS: the loop
    # reads a plain socket itself.
    threads = 1 if pairs[0].client._t._aio_socket_fd() >= 0 else 2
    assert fds() == base_fds + 3 * 2 * 2
    await until(lambda: gofast_threads() == base_threads + 3 * 2 * threads, what="threads")
    for p in pairs[:2]:
        await p.client.aclose()  # the server's transport ends because its peer did
        await p.server.wait_closed()
    await pairs[2].close()
    await until(lambda: fds() == base_fds, what=f"fds back to {base_fds}")
    await until(lambda: gofast_threads() == base_threads, what="every transport thread gone")
    # Still referenced: the counters stay readable (whoami + ping).
    assert all(p.client.stats()["n_txreq"] == 2 for p in pairs)


def rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


async def test_a_thousand_closed_transports_kept_referenced_cost_little() -> None:
    kept = []
    payload = BinMessage(ECHO_ID, b"p" * 4096)

    def setup(t: Any) -> None:
        t.subscribe(ECHO_ID, echo)

    warm = await make_apair(server_setup=setup)
    await warm.client.request(payload)
    await warm.close()
    gc.collect()
    base_fds, base_threads, base_rss = fds(), gofast_threads(), rss_kib()
    for _ in range(500):
        p = await make_apair(server_setup=setup)
        # Some traffic, so buffers and the compressor state really exist.
        await p.client.request(payload)
        for _ in range(4):
            await p.client.post(payload)
        await p.close()
        kept.append(p)
    assert fds() == base_fds
    await until(lambda: gofast_threads() == base_threads, what="every transport's threads gone")
    grown = rss_kib() - base_rss
    # 1,000 open transports with traffic take ~100+ MiB; closed ones almost nothing.
    assert grown < 16 * 1024, f"1,000 closed transports kept {grown} KiB"
    assert all(p.client.stats()["n_txreq"] == 2 for p in kept)


async def test_the_fd_limit_does_not_fill_with_closed_transports() -> None:
    """A service that keeps its closed transports (or a server that has
    served many clients) must not run out of fds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    kept = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (fds() + 40, hard))
    try:
        for _ in range(100):  # 200 transports through a budget of 40 fds
            p = await make_apair()
            await p.close()
            kept.append(p)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert len(kept) == 100


async def test_a_server_serving_client_after_client_keeps_no_fd() -> None:
    server = gofast.aio.Server(("127.0.0.1", 0)).subscribe(ECHO_ID, echo)
    async with server:
        base = fds()
        for i in range(50):
            async with await gofast.aio.connect(server.address) as t:
                await t.handshake()
                assert (await t.request(BinMessage(ECHO_ID, b"%d" % i))).data == b"%d" % i
        await until(lambda: not server.connections, what="the server seeing every close")
        await until(lambda: fds() == base, what=f"fds back to {base}")
    assert server.stats()["n_accepted"] == 50


async def test_a_dropped_closed_transport_is_freed(link: str) -> None:
    p = await make_apair(link=link, server_setup=lambda t: t.subscribe(ECHO_ID, echo))
    assert (await p.client.request(BinMessage(ECHO_ID, b"x"))).data == b"x"
    await p.close()
    gone = [weakref.ref(p.client), weakref.ref(p.server)]
    del p
    gc.collect()
    assert [ref() for ref in gone] == [None, None]


def test_transports_left_open_end_with_their_loop() -> None:
    """Once the loop is closed, transports left open (streams open both
    ways) are freed and their threads end (as test_close's dropped
    transports)."""
    gc.collect()
    before = gofast_thread_ids()
    ours: set[str] = set()

    def setup(t: Any) -> None:
        t.subscribe(STREAM_ID, lambda s, m: lambda m: None)  # keeps its side open

    async def main() -> list[weakref.ref[gofast.aio.Transport]]:
        p = await make_apair(client_setup=setup, server_setup=setup)
        p.client.stream(BinMessage(STREAM_ID, b""))
        p.server.stream(BinMessage(STREAM_ID, b""))
        await until(lambda: p.client._t._exchanges_in_use() == (1, 1), what="both streams open")
        ours.update(gofast_thread_ids() - before)
        assert len(ours) == 2, "a writer per transport (the loop reads)"
        return [weakref.ref(p.client), weakref.ref(p.server)]

    refs = asyncio.run(main())  # returns with both transports open
    gc.collect()
    assert [r() for r in refs] == [None, None]
    deadline = time.monotonic() + 10
    while ours & gofast_thread_ids():
        assert time.monotonic() < deadline, f"threads {ours & gofast_thread_ids()} still run"
        time.sleep(0.002)


UNCLOSED_SCRIPT = textwrap.dedent(
    """
    import asyncio, gc, os, sys, time
    sys.path.insert(0, {tests!r})
    from conftest import make_apair
    import gofast

    def gofast_threads():
        n = 0
        for task in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{{task}}/comm") as f:
                    n += f.read().startswith("gofast-")
            except OSError:  # ended meanwhile (ENOENT or ESRCH)
                pass
        return n

    async def main():
        def setup(t):
            t.subscribe(800, lambda stream, msg: msg)
            t.subscribe(801, lambda stream, msg: None)

        pairs = [await make_apair(server_setup=setup) for _ in range(3)]
        for p in pairs:
            assert (await p.client.request(gofast.BinMessage(800, b"hi"))).data == b"hi"
            p.client.stream(gofast.BinMessage(801, b""))
        {ending}

    asyncio.run(main())
    gc.collect()  # the loop is closed: nothing holds the transports now
    deadline = time.monotonic() + 10
    while gofast_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    print("threads left:", gofast_threads(), flush=True)
    """
)


@pytest.mark.parametrize(
    "ending",
    [
        "pass  # leave asyncio.run() with every transport still open",
        "await pairs[0].client.aclose()  # close one, leave the rest",
        "raise SystemExit(0)  # leave through an exception",
    ],
)
def test_unclosed_transports_end_with_their_loop_and_never_hang_the_interpreter(
    ending: str,
) -> None:
    script = UNCLOSED_SCRIPT.format(tests=TESTS, ending=ending)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    if "SystemExit" not in ending:
        assert done.stdout.strip() == "threads left: 0"
    assert "Traceback" not in done.stderr, done.stderr
