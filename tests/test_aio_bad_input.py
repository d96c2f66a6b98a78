"""docs/protocol.md §6 through gofast.aio: the async twins of
test_bad_input.py (its crafted bytes, reused). A raw peer on the loop
(tests/aio_wire.py) sends them to a handshaken ``gofast.aio.Transport``
whose handlers run on the loop, and each test checks what an asyncio user
relies on:

* a frame that can be delimited but not used is dropped and counted,
  logged, and never reaches a handler; the loop goes on: a later POST
  reaches its handler, the raw peer's ping is answered and our own
  ``await t.ping()`` resolves;
* where the frame answers an awaited request, the await raises
  ``gofast.ProtocolError`` (in time: it never hangs), and a frame on the
  opaque of an awaited request that is not its RESPONSE leaves the await
  pending until the RESPONSE comes;
* bytes that cannot be delimited close the connection: the awaited
  request raises ``gofast.ProtocolError``, ``wait_closed()`` returns,
  both open streams' ``async for`` end with ``ConnectionClosed``, later
  awaits raise ``ConnectionClosed`` at once, the peer sees the end;
* ``await handshake()`` against a broken or silent peer raises a typed
  error, in time;
* no opaque leaks (``_exchanges_in_use()``).

The decoder is the sync API's (every body is tried every way in
test_bad_input.py): here every broken body answers an awaited request, and
one of each kind travels every other way. The late RESPONSE after a timeout
is test_late_responses' (and its async twin's).
"""

from __future__ import annotations

import asyncio
import logging
import math
import resource
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

import gofast
import gofast.aio
import wire
from aio_wire import AInbox, ARawPeer, araw_server, until
from gofast import BinMessage
from test_bad_input import (
    BOMBS,
    CORRUPT_GZIP,
    CORRUPT_LZW,
    DATA_ENTRY,
    FRAME_MAX,
    ID_ENTRY,
    MALFORMED_PACKETS,
    OVERSIZED,
    POST_ID,
    REQ_ID,
    SETTINGS,
    STREAM_ID,
    TIMEOUT,
    VALID,
    WRONG_MARKERS,
    assert_dropped,
    assert_logged,
    msg_map,
)
from wire import (
    FINISH,
    PING_ID,
    POST,
    REQUEST,
    STREAM_MSG,
    STREAM_START,
    bstr,
    encode_body,
    encode_finish,
    encode_frame,
    gzip_compress,
    tag,
)


async def settled(fut: asyncio.Future[Any], timeout: float = TIMEOUT) -> Any:
    """``fut``'s outcome (its result, or its exception raised); fails the
    test if it is still pending after ``timeout``: the await would hang."""
    done, _ = await asyncio.wait([fut], timeout=timeout)
    assert done, f"still pending after {timeout}s: the await hangs"
    return fut.result()


class AHarness:
    """A handshaken gofast.aio transport with handlers, and the raw peer."""

    def __init__(
        self, raw: ARawPeer, t: gofast.aio.Transport, posts: AInbox, streams: AInbox
    ) -> None:
        self.raw = raw
        self.t = t
        self.posts = posts  # (id, data) of every POST handled
        # (opaque, data), then (opaque, None) at the peer's end or
        # (opaque, exception) if `async for` raised, for each stream the
        # raw peer opened
        self.streams = streams
        self._posted = 0

    def stats(self) -> dict[str, int]:
        return dict(self.t.stats())

    def in_use(self) -> tuple[int, int]:
        return self.t._t._exchanges_in_use()

    async def good_post(self) -> bytes:
        """Sends a valid POST and waits for its handler; returns the frame."""
        self._posted += 1
        data = b"after-%d" % self._posted
        frame = await self.raw.post(POST_ID, data)
        await until(lambda: (POST_ID, data) in self.posts.snapshot(), TIMEOUT, f"POST {data!r}")
        return frame

    async def assert_usable(self) -> None:
        """The connection still works both ways, and so do our awaits."""
        await self.good_post()
        assert await self.raw.ping("still there") == b"still there"
        pong = asyncio.ensure_future(self.t.ping("and back", TIMEOUT))
        req = await self.raw.read_frame(TIMEOUT)
        assert (req.kind, req.id) == (REQUEST, PING_ID), req
        await self.raw.send_frame(REQUEST, req.opaque, PING_ID, req.data)
        assert await settled(pong) == "and back"
        assert not self.t.closed

    async def start_request(self, timeout: float = TIMEOUT) -> tuple[asyncio.Future[Any], int]:
        """Awaits a request in a task; the raw peer reads the REQUEST but
        does not answer yet. Returns the task and the opaque."""
        fut = asyncio.ensure_future(self.t.request(BinMessage(REQ_ID, b"question"), None, timeout))
        frame = await self.raw.read_frame(TIMEOUT)
        assert (frame.kind, frame.id, frame.data) == (REQUEST, REQ_ID, b"question"), frame
        return fut, frame.opaque

    async def answer(self, fut: asyncio.Future[Any], opaque: int, data: bytes) -> None:
        """The raw peer answers the request; its await returns that."""
        assert not fut.done()
        await self.raw.send_frame(REQUEST, opaque, REQ_ID, data)
        assert (await settled(fut)).data == data

    async def open_remote_stream(self) -> int:
        """The raw peer opens a stream; waits until the handler took it."""
        opaque = self.raw.next_opaque()
        await self.raw.send_frame(STREAM_START, opaque, STREAM_ID, b"open")
        await until(lambda: (opaque, b"open") in self.streams.snapshot(), TIMEOUT, "stream handler")
        return opaque

    async def end_remote_stream(self, opaque: int) -> None:
        """The raw peer closes its side; the handler's ``async for`` ends,
        it returns, and our side's FINISH follows."""
        await self.raw.send(encode_finish(opaque))
        fin = await self.raw.read_frame(TIMEOUT)
        assert (fin.kind, fin.opaque) == (FINISH, opaque)
        await until(lambda: self.in_use() == (0, 0), TIMEOUT, "the stream to end")


@pytest.fixture
async def h(caplog: pytest.LogCaptureFixture) -> AsyncIterator[AHarness]:
    caplog.set_level(logging.DEBUG, logger="gofast")
    posts = AInbox()
    streams = AInbox()

    def on_post(stream: Any, msg: BinMessage) -> None:
        posts.append((msg.id, msg.data))

    async def on_stream(stream: gofast.aio.Stream, msg: BinMessage) -> None:
        # Returning closes our side: once the peer has closed its own.
        opaque = stream.opaque
        streams.append((opaque, msg.data))
        try:
            async for m in stream:
                streams.append((opaque, m.data))
        except gofast.GofastError as e:
            streams.append((opaque, e))
            return
        streams.append((opaque, None))

    def setup(t: gofast.aio.Transport) -> None:
        t.subscribe(POST_ID, on_post)
        t.subscribe(STREAM_ID, on_stream)

    async with araw_server(SETTINGS, setup=setup, name="victim") as (raw, t):
        yield AHarness(raw, t, posts, streams)


# ---------------------------------------------------------------------------
# Bodies that break the message format


BODIES: dict[str, tuple[bytes, tuple[str, ...]]] = {
    # name: (body, words the drop's log line has)
    "no-tag-43": (b"\xbf" + ID_ENTRY + DATA_ENTRY + b"\xff", ("tag 43",)),
    "no-id": (msg_map(DATA_ENTRY), ("no id",)),
    "no-data": (msg_map(ID_ENTRY), ("no data",)),
    "id-0": (encode_body(0, b"payload"), ("id 0",)),
    **{
        f"compression-tag-{n}": (
            tag(n) + bstr(gzip_compress(encode_body(POST_ID, b"payload"))),
            ("tag", str(n)),
        )
        for n in (48, 44, 1000)
    },
    **{f"gzip-{k}": (tag(46) + bstr(v), ("gzip",)) for k, v in CORRUPT_GZIP.items()},
    **{f"lzw-{k}": (tag(47) + bstr(v), ("lzw",)) for k, v in CORRUPT_LZW.items()},
    **{f"bomb-{k}": (v, ("exceeds",)) for k, v in BOMBS.items()},
}
# One of each kind of failure: the message map, gzip, LZW, a bomb.
ONE_OF_EACH = ["no-id", "gzip-crc-mismatch", "lzw-code-past-table", "bomb-gzip-in-gzip"]


@pytest.mark.parametrize("case", sorted(BODIES))
async def test_a_broken_response_body_fails_the_awaited_request(
    h: AHarness, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    body, words = BODIES[case]
    fut, opaque = await h.start_request()
    assert h.in_use() == (1, 0)
    before = h.stats()
    frame = await h.raw.send_frame(REQUEST, opaque, body=body)
    with pytest.raises(gofast.ProtocolError):
        await settled(fut)
    await h.good_post()
    assert_dropped(h, before, frame)
    assert h.stats()["n_rxresp"] - before["n_rxresp"] == 1
    # the opaque went back to the pool, and the next request works
    assert h.in_use() == (0, 0)
    fut, opaque = await h.start_request()
    await h.answer(fut, opaque, b"answer")
    assert_logged(caplog, "dropped", *words)
    await h.assert_usable()
    assert h.in_use() == (0, 0)


@pytest.mark.parametrize("case", ONE_OF_EACH)
@pytest.mark.parametrize("via", ["post", "request", "stream_start", "stream"])
async def test_a_broken_body_reaches_no_handler(
    h: AHarness, caplog: pytest.LogCaptureFixture, via: str, case: str
) -> None:
    body, words = BODIES[case]
    raw = h.raw
    if via == "post":
        before = h.stats()
        frame = await raw.send_frame(POST, raw.next_opaque(), body=body)
        await h.good_post()
        assert_dropped(h, before, frame)
        assert h.posts.snapshot() == [(POST_ID, b"after-1")], "the bad POST reached the handler"
    elif via == "request":
        # dropped, and no RESPONSE goes back (the next frame the raw peer
        # reads is its ping's answer, in assert_usable)
        before = h.stats()
        frame = await raw.send_frame(REQUEST, raw.next_opaque(), body=body)
        await h.good_post()
        assert_dropped(h, before, frame)
        assert h.stats()["n_rxreq"] - before["n_rxreq"] == 1
    elif via == "stream_start":
        before = h.stats()
        frame = await raw.send_frame(STREAM_START, raw.next_opaque(), body=body)
        await h.good_post()
        assert_dropped(h, before, frame)
        assert h.streams.snapshot() == [], "a stream handler ran"
        assert h.in_use() == (0, 0)
    else:
        opaque = await h.open_remote_stream()
        before = h.stats()
        frame = await raw.send_frame(STREAM_MSG, opaque, body=body)
        await raw.send_frame(STREAM_MSG, opaque, STREAM_ID, b"good")
        await until(lambda: (opaque, b"good") in h.streams.snapshot(), TIMEOUT, "stream message")
        assert_dropped(h, before, frame)
        assert h.streams.snapshot() == [(opaque, b"open"), (opaque, b"good")]
        await h.end_remote_stream(opaque)
        assert h.streams.snapshot()[-1] == (opaque, None)
    assert_logged(caplog, "dropped", *words)
    await h.assert_usable()
    assert h.in_use() == (0, 0)


async def test_just_under_the_bomb_limit_reaches_the_handler(h: AHarness) -> None:
    fits = encode_body(POST_ID, bytes(FRAME_MAX * 4 - 64))
    await h.raw.send_frame(POST, h.raw.next_opaque(), body=tag(46) + bstr(gzip_compress(fits)))
    assert await h.posts.wait_for(1, TIMEOUT) == [(POST_ID, bytes(FRAME_MAX * 4 - 64))]
    assert h.stats()["n_mdrops"] == 0
    await h.assert_usable()


# ---------------------------------------------------------------------------
# Frames that delimit but belong to nothing, or to another exchange

DROPPED_FRAMES = {
    **{f"kind-0x{k:02x}": encode_frame(k, 5000, POST_ID, b"payload") for k in (0x82, 0xC9, 0x00)},
    "finish-unknown-opaque": encode_finish(4321),
    "stream-msg-unknown-opaque": encode_frame(STREAM_MSG, 4321, STREAM_ID, b"lost"),
    **{f"post-reserved-id-{i:#x}": encode_frame(POST, 5000, i, b"x") for i in (0x1000, 0x100F)},
    **{f"packet-{k}": v for k, v in MALFORMED_PACKETS.items()},
}


@pytest.mark.parametrize("case", sorted(DROPPED_FRAMES))
async def test_a_frame_of_nothing_is_dropped_and_the_loop_goes_on(
    h: AHarness, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    frame = DROPPED_FRAMES[case]
    before = h.stats()
    await h.raw.send(frame)
    await h.good_post()
    assert_dropped(h, before, frame)
    assert h.posts.snapshot() == [(POST_ID, b"after-1")]
    assert h.streams.snapshot() == []
    assert_logged(caplog, "dropped")
    await h.assert_usable()
    assert h.in_use() == (0, 0)


@pytest.mark.parametrize("kind", ["finish", "stream_msg", "stream_start"])
async def test_a_frame_on_an_awaited_requests_opaque_leaves_it_pending(
    h: AHarness, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """Not its RESPONSE: dropped; the await goes on until the RESPONSE."""
    fut, opaque = await h.start_request()
    before = h.stats()
    frame = {
        "finish": encode_finish(opaque),
        "stream_msg": encode_frame(STREAM_MSG, opaque, REQ_ID, b"not a response"),
        "stream_start": encode_frame(STREAM_START, opaque, STREAM_ID, b"on a request"),
    }[kind]
    await h.raw.send(frame)
    await h.good_post()
    assert_dropped(h, before, frame)
    assert not fut.done()
    assert h.streams.snapshot() == []
    await h.answer(fut, opaque, b"answer")
    assert_logged(caplog, "dropped")
    await h.assert_usable()
    assert h.in_use() == (0, 0)


async def test_frames_after_the_peers_finish_reach_no_stream(
    h: AHarness, caplog: pytest.LogCaptureFixture
) -> None:
    """The handler's ``async for`` ended once: a second FINISH, a STREAM
    message and a second STREAM-START of the same stream do not run it again."""
    opaque = await h.open_remote_stream()
    await h.end_remote_stream(opaque)
    assert h.streams.snapshot() == [(opaque, b"open"), (opaque, None)]
    for frame in (
        encode_finish(opaque),
        encode_frame(STREAM_MSG, opaque, STREAM_ID, b"too late"),
    ):
        before = h.stats()
        await h.raw.send(frame)
        await h.good_post()
        assert_dropped(h, before, frame)
    assert h.streams.snapshot() == [(opaque, b"open"), (opaque, None)], "the stream ran again"
    assert_logged(caplog, "dropped", "finish")
    assert_logged(caplog, "dropped", "stream")
    await h.assert_usable()
    assert h.in_use() == (0, 0)


async def test_a_second_stream_start_on_an_open_stream_is_dropped(
    h: AHarness, caplog: pytest.LogCaptureFixture
) -> None:
    opaque = await h.open_remote_stream()
    before = h.stats()
    again = await h.raw.send_frame(STREAM_START, opaque, STREAM_ID, b"again")
    await h.good_post()
    assert_dropped(h, before, again)
    assert h.streams.snapshot() == [(opaque, b"open")], "the handler ran twice"
    await h.raw.send_frame(STREAM_MSG, opaque, STREAM_ID, b"still mine")
    await until(lambda: (opaque, b"still mine") in h.streams.snapshot(), TIMEOUT, "stream msg")
    await h.end_remote_stream(opaque)
    assert_logged(caplog, "dropped", "in use")
    await h.assert_usable()


async def test_a_response_on_the_opaque_of_our_stream_is_dropped(
    h: AHarness, caplog: pytest.LogCaptureFixture
) -> None:
    """An ``81`` frame on the opaque of a stream we opened is neither its
    message nor a RESPONSE: our ``recv()`` does not see it; the stream goes on."""
    stream = h.t.stream(BinMessage(STREAM_ID, b"ours"))
    start = await h.raw.read_frame(TIMEOUT)
    assert (start.kind, start.opaque) == (STREAM_START, stream.opaque)
    before = h.stats()
    frame = await h.raw.send_frame(REQUEST, stream.opaque, REQ_ID, b"misdirected")
    await h.good_post()
    assert_dropped(h, before, frame)
    assert_logged(caplog, "dropped")
    await h.raw.send_frame(STREAM_MSG, stream.opaque, STREAM_ID, b"fine")
    got = await stream.recv(TIMEOUT)
    assert got is not None and got.data == b"fine"
    await stream.close()
    assert (await h.raw.read_frame(TIMEOUT)).kind == FINISH
    await h.raw.send(encode_finish(stream.opaque))
    assert await stream.recv(TIMEOUT) is None
    await until(lambda: h.in_use() == (0, 0), TIMEOUT, "the stream to end")
    await h.assert_usable()


async def test_bad_frames_one_byte_at_a_time(h: AHarness) -> None:
    """Dropped frames split anywhere by TCP (each byte its own read, its
    own wake of the loop) do not upset the next ones."""
    h.raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    bad = [
        encode_frame(0x82, 5000, POST_ID, b"x" * 300),
        encode_frame(POST, 5001, body=encode_body(0, b"zero")),
        encode_finish(4321),
    ]
    good = encode_frame(POST, 5002, POST_ID, b"good")
    before = h.stats()
    for byte in b"".join(bad) + good:
        await h.raw.send(bytes([byte]))
    assert await h.posts.wait_for(1, TIMEOUT) == [(POST_ID, b"good")]
    after = h.stats()
    assert after["n_mdrops"] - before["n_mdrops"] == 3
    assert after["n_dropped"] - before["n_dropped"] == sum(map(len, bad))
    await h.assert_usable()


async def test_a_frame_of_exactly_frame_max_reaches_the_handler(h: AHarness) -> None:
    opaque = h.raw.next_opaque()
    n = FRAME_MAX - len(encode_frame(POST, opaque, POST_ID, b""))
    while len(encode_frame(POST, opaque, POST_ID, bytes(n))) > FRAME_MAX:
        n -= 1
    frame = encode_frame(POST, opaque, POST_ID, bytes(n))
    assert len(frame) == FRAME_MAX
    await h.raw.send(frame)
    assert await h.posts.wait_for(1, TIMEOUT) == [(POST_ID, bytes(n))]
    assert h.stats()["n_mdrops"] == 0
    await h.assert_usable()


# ---------------------------------------------------------------------------
# Bytes that cannot be delimited: the connection must close


async def read_all(stream: gofast.aio.Stream) -> tuple[list[bytes], BaseException | None]:
    """What ``async for`` over ``stream`` gets, and what it raised at the end."""
    got: list[bytes] = []
    try:
        async for m in stream:
            got.append(m.data)
    except gofast.GofastError as e:
        return got, e
    return got, None


class Pending:
    """What is in flight when the bad bytes arrive: an awaited request with
    no timeout of its own (only the connection's end can release it), a
    stream we opened read by ``async for`` in a task, and one the raw peer
    opened, read by the handler's ``async for``."""

    request: asyncio.Future[Any]
    local: asyncio.Future[tuple[list[bytes], BaseException | None]]
    local_opaque: int
    remote_opaque: int

    @classmethod
    async def start(cls, h: AHarness) -> Pending:
        p = cls()
        ours, theirs = h.in_use()
        p.request, _ = await h.start_request(math.inf)
        stream = h.t.stream(BinMessage(STREAM_ID, b"ours"))
        start = await h.raw.read_frame(TIMEOUT)
        assert (start.kind, start.data) == (STREAM_START, b"ours")
        p.local = asyncio.ensure_future(read_all(stream))
        p.local_opaque = stream.opaque
        p.remote_opaque = await h.open_remote_stream()
        assert h.in_use() == (ours + 2, theirs + 1)
        assert not p.request.done() and not p.local.done()
        return p


async def assert_connection_closed(
    h: AHarness, p: Pending, caplog: pytest.LogCaptureFixture, *log_words: str
) -> None:
    t = h.t
    # the awaited request is failed, not left hanging, and told that the
    # peer broke the protocol (it may not speak gofast at all)
    with pytest.raises(gofast.ProtocolError):
        await settled(p.request)
    await settled(asyncio.ensure_future(t.wait_closed()))
    assert t.closed
    # both open streams' `async for` end, with the connection's end
    got, error = await settled(p.local)
    assert got == [] and isinstance(error, gofast.ConnectionClosed), error
    await until(lambda: len(h.streams.snapshot()) == 2, TIMEOUT, "the remote stream's end")
    (_, opened), (opaque, error) = h.streams.snapshot()
    assert (opaque, opened) == (p.remote_opaque, b"open")
    assert isinstance(error, gofast.ConnectionClosed), error
    assert h.in_use() == (0, 0)
    # the peer sees the connection end (it is not left talking to a wall)
    await h.raw.wait_closed(TIMEOUT)
    # and every later await fails at once
    with pytest.raises(gofast.ConnectionClosed):
        await t.post(BinMessage(POST_ID, b"x"))
    with pytest.raises(gofast.ConnectionClosed):
        await settled(asyncio.ensure_future(t.request(BinMessage(REQ_ID, b"x"), timeout=math.inf)))
    with pytest.raises(gofast.ConnectionClosed):
        await settled(asyncio.ensure_future(t.ping("x", timeout=math.inf)))
    with pytest.raises(gofast.ConnectionClosed):
        s = t.stream(BinMessage(STREAM_ID, b"x"))
        await settled(asyncio.ensure_future(s.recv()))
    assert t.stats()["n_handler_errors"] == 0
    assert_logged(caplog, "connection ends", *log_words, level=logging.WARNING)


CLOSING: dict[str, tuple[bytes, str]] = {
    # name: (bytes, what the WARNING says)
    **{f"marker-{k}": (v, "marker") for k, v in WRONG_MARKERS.items()},
    **{f"length-{k}": (v, "exceeds the maximum") for k, v in OVERSIZED.items()},
    **{
        f"packet-head-0x{k:02x}": (wire.MARKER + bytes([POST, k]) + VALID[5:], "byte string")
        for k in (0x00, 0x5F, 0x9F, 0xFF, 0xD9)
    },
}


@pytest.mark.parametrize("case", sorted(CLOSING))
async def test_undelimitable_bytes_close_and_fail_every_await(
    h: AHarness, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    data, words = CLOSING[case]
    p = await Pending.start(h)
    before = h.stats()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    await h.raw.send(data)  # the rest of a claimed length is never sent
    await assert_connection_closed(h, p, caplog, words)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss < 256 << 20
    assert h.stats()["n_mdrops"] - before["n_mdrops"] == 1
    if case == "marker-after-a-good-frame":
        assert h.posts.snapshot() == [(POST_ID, b"payload")], "the frame before was lost"


async def test_what_came_before_the_bad_bytes_is_delivered(
    h: AHarness, caplog: pytest.LogCaptureFixture
) -> None:
    """In the same read as the bytes that end the connection: the awaited
    request's RESPONSE, messages on both streams and a POST. Each reaches
    its await, ``async for`` or handler before the end does."""
    answered, answered_opaque = await h.start_request()
    p = await Pending.start(h)
    await h.raw.send(
        encode_frame(REQUEST, answered_opaque, REQ_ID, b"in time")
        + encode_frame(STREAM_MSG, p.remote_opaque, STREAM_ID, b"to the handler")
        + encode_frame(STREAM_MSG, p.local_opaque, STREAM_ID, b"one")
        + encode_frame(STREAM_MSG, p.local_opaque, STREAM_ID, b"two")
        + encode_frame(POST, h.raw.next_opaque(), POST_ID, b"posted")
        + b"GET / HTTP/1.1\r\n\r\n"
    )
    assert (await settled(answered)).data == b"in time"
    with pytest.raises(gofast.ProtocolError):
        await settled(p.request)
    got, error = await settled(p.local)
    assert got == [b"one", b"two"] and isinstance(error, gofast.ConnectionClosed), (got, error)
    await until(lambda: len(h.streams.snapshot()) == 3, TIMEOUT, "the remote stream's end")
    assert h.streams.snapshot()[:2] == [
        (p.remote_opaque, b"open"),
        (p.remote_opaque, b"to the handler"),
    ]
    assert isinstance(h.streams.snapshot()[2][1], gofast.ConnectionClosed)
    assert h.posts.snapshot() == [(POST_ID, b"posted")]
    await settled(asyncio.ensure_future(h.t.wait_closed()))
    assert h.in_use() == (0, 0)
    assert_logged(caplog, "connection ends", "marker", level=logging.WARNING)


@pytest.mark.parametrize("cut", [2, 5, 20, len(VALID) - 1])
async def test_a_peer_ending_inside_a_frame_fails_every_await(
    h: AHarness, caplog: pytest.LogCaptureFixture, cut: int
) -> None:
    big = encode_frame(POST, 5999, POST_ID, bytes(300))  # a 2-byte packet head
    frame = big if cut == 5 else VALID
    p = await Pending.start(h)
    await h.raw.send(frame[:cut])
    h.raw.shutdown_write()
    await assert_connection_closed(h, p, caplog, "inside a frame")
    assert h.posts.snapshot() == []


# ---------------------------------------------------------------------------
# Bad input inside the handshake itself


@pytest.fixture
async def bare(caplog: pytest.LogCaptureFixture) -> AsyncIterator[tuple[ARawPeer, Any]]:
    caplog.set_level(logging.WARNING, logger="gofast")
    async with araw_server(SETTINGS, handshake=False, name="victim") as pair:
        yield pair


async def test_garbage_instead_of_a_whoami(bare: Any, caplog: pytest.LogCaptureFixture) -> None:
    """``await handshake()`` raises a ProtocolError at once, showing what
    came instead; it does not sit out its timeout."""
    raw, t = bare
    done = asyncio.ensure_future(t.handshake(60.0))
    req = await raw.read_frame(TIMEOUT)
    assert req.id == wire.WHOAMI_ID
    await raw.send(b"SSH-2.0-OpenSSH_9.6\r\n")
    with pytest.raises(gofast.ProtocolError, match="marker 53 53 48, want d9 d9 f7"):
        await settled(done)
    assert t.closed
    await settled(asyncio.ensure_future(t.wait_closed()))
    await raw.wait_closed(TIMEOUT)
    assert t._t._exchanges_in_use() == (0, 0)
    assert_logged(caplog, "connection ends", "marker", level=logging.WARNING)


async def test_a_silent_peer_times_out_the_handshake(bare: Any) -> None:
    """``await handshake(0.3)`` raises Timeout in time; the whoami's opaque
    is held until its late answer, which frees it."""
    raw, t = bare
    with pytest.raises(gofast.Timeout):
        await settled(asyncio.ensure_future(t.handshake(0.3)))
    request = await raw.read_frame(TIMEOUT)
    assert request.id == wire.WHOAMI_ID
    assert t.stats()["n_timeouts"] == 1
    assert t._t._exchanges_in_use() == (1, 0), "quarantined until the late answer"
    dropped = t.stats()["n_mdrops"]
    await raw.send_frame(REQUEST, request.opaque, wire.WHOAMI_ID, raw.whoami())
    # Frames are handled in order: once the ping is answered, so is the whoami.
    assert await raw.ping("sync", TIMEOUT) == b"sync"
    assert t._t._exchanges_in_use() == (0, 0), "the late whoami frees the opaque"
    assert t.stats()["n_mdrops"] == dropped + 1


@pytest.mark.parametrize(
    "body",
    [
        encode_body(wire.WHOAMI_ID, p)
        for p in (b"", b"\x05ab", b"\x03raw\x01" + b"\x00" * 5, b"\x03raw\xff" + b"\x00" * 10)
    ]
    + [msg_map(DATA_ENTRY)],
    ids=["empty", "short-name", "short-buffersize", "bad-version-head", "no-id"],
)
async def test_a_malformed_whoami_answer_fails_the_handshake(bare: Any, body: bytes) -> None:
    raw, t = bare
    done = asyncio.ensure_future(t.handshake(60.0))
    req = await raw.read_frame(TIMEOUT)
    await raw.send_frame(REQUEST, req.opaque, body=body)
    with pytest.raises(gofast.ProtocolError):
        await settled(done)
    assert t._t._exchanges_in_use() == (0, 0)


# ---------------------------------------------------------------------------
# Replies whose frame is fine but whose payload is not: decoded on the loop


@pytest.mark.parametrize(
    ("call", "msg_id", "payload"),
    [
        ("ping", PING_ID, b"\x00\x09ab"),  # says 9 bytes, has 2
        ("whoami", wire.WHOAMI_ID, b"\x05a"),
    ],
)
async def test_a_malformed_builtin_reply_fails_its_await(
    h: AHarness, call: str, msg_id: int, payload: bytes
) -> None:
    fut = asyncio.ensure_future(h.t.ping("x", TIMEOUT) if call == "ping" else h.t.whoami(TIMEOUT))
    req = await h.raw.read_frame(TIMEOUT)
    assert (req.kind, req.id) == (REQUEST, msg_id)
    await h.raw.send_frame(REQUEST, req.opaque, msg_id, payload)
    with pytest.raises(gofast.ProtocolError, match="payload"):
        await settled(fut)
    assert h.in_use() == (0, 0)
    await h.assert_usable()


@pytest.fixture
async def ext() -> AsyncIterator[tuple[ARawPeer, Any]]:
    """Both sides advertise x-errors (docs/protocol.md §9)."""
    async with araw_server({"errors.extension": True}, tags="x-errors") as pair:
        yield pair


ERROR_ID = 0x1004  # x-errors: the failed handler's [type, message]
BAD_ERROR_PAYLOAD = b"\xff\x00"  # not that array


async def test_a_malformed_error_reply_fails_the_awaited_request(ext: Any) -> None:
    raw, t = ext
    fut = asyncio.ensure_future(t.request(BinMessage(REQ_ID, b"q"), None, TIMEOUT))
    req = await raw.read_frame(TIMEOUT)
    await raw.send_frame(REQUEST, req.opaque, ERROR_ID, BAD_ERROR_PAYLOAD)
    with pytest.raises(gofast.ProtocolError):
        await settled(fut)
    assert t._t._exchanges_in_use() == (0, 0)
    assert await raw.ping("still there") == b"still there"


async def test_a_malformed_error_on_our_stream_ends_it_with_an_error(ext: Any) -> None:
    """The peer's stream handler failed (an error message, then FINISH) but
    its error does not parse: ``async for`` still ends, raising an error
    that says so, never delivering the error as a message."""
    raw, t = ext
    stream = t.stream(BinMessage(STREAM_ID, b"ours"))
    start = await raw.read_frame(TIMEOUT)
    await raw.send_frame(STREAM_MSG, start.opaque, ERROR_ID, BAD_ERROR_PAYLOAD)
    await raw.send(encode_finish(start.opaque))
    got, error = await settled(asyncio.ensure_future(read_all(stream)))
    assert got == []
    assert isinstance(error, gofast.GofastError) and "malformed" in str(error), error
    await stream.close()
    assert (await raw.read_frame(TIMEOUT)).kind == FINISH
    await until(lambda: t._t._exchanges_in_use() == (0, 0), TIMEOUT, "the stream to end")
