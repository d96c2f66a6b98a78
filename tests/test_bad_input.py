"""docs/protocol.md §6, every case: a raw-socket peer sends crafted bytes to a
real transport, after a valid handshake, and each test checks what a user
relies on:

* a frame that can be delimited but not used is dropped and counted
  (``n_mdrops`` +1, ``n_dropped`` + its length), logged, and the connection
  goes on: a later POST reaches its handler and a ping round-trips;
* where the frame answers a pending request, the caller gets a typed
  ``gofast.ProtocolError`` instead;
* bytes that cannot be delimited close the connection: the transport is
  closed, the peer sees the connection end, pending requests fail with
  ``gofast.ProtocolError`` (no hang), open streams get their ``None``
  callback, later calls fail at once with ``gofast.ConnectionClosed``;
* no opaque leaks (``_exchanges_in_use()``), nothing crashes or hangs.
"""

from __future__ import annotations

import logging
import math
import resource
import socket
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

import gofast
import wire
from conftest import wait_until
from wire import (
    FINISH,
    GZIP_HEADER,
    POST,
    REQUEST,
    STREAM_MSG,
    STREAM_START,
    Inbox,
    bstr,
    encode_body,
    encode_finish,
    encode_frame,
    gzip_compress,
    lzw_codes,
    lzw_compress,
    tag,
    uint,
)

FRAME_MAX = 4096
SETTINGS = {"frame.max": FRAME_MAX, "buffersize": 1024, "request.timeout": 10.0}
POST_ID = 100  # the transport's POST handler
STREAM_ID = 102  # the transport's stream handler
REQ_ID = 101  # what the transport requests from the raw peer
TIMEOUT = 5.0


class Harness:
    """A handshaken transport with handlers, and the raw peer facing it."""

    def __init__(
        self,
        raw: wire.RawPeer,
        transport: gofast.Transport,
        posts: Inbox,
        streams: Inbox,
        pool: ThreadPoolExecutor,
    ) -> None:
        self.raw = raw
        self.t = transport
        self.posts = posts  # (id, data) of every POST handled
        self.streams = streams  # (opaque, data or None) on streams the raw peer opened
        self.pool = pool
        self._posted = 0

    def stats(self) -> dict[str, int]:
        return dict(self.t.stats())

    def good_post(self) -> bytes:
        """Sends a valid POST and waits for its handler; returns the frame."""
        self._posted += 1
        data = b"after-%d" % self._posted
        frame = self.raw.post(POST_ID, data)
        wait_until(lambda: (POST_ID, data) in self.posts.snapshot(), TIMEOUT, f"POST {data!r}")
        return frame

    def assert_usable(self) -> None:
        """The connection still works both ways."""
        self.good_post()
        assert self.raw.ping("still there") == b"still there"
        assert not self.t.closed

    def start_request(self, timeout: float = TIMEOUT) -> tuple[Future[Any], int]:
        """The transport requests; the raw peer reads the REQUEST but does
        not answer yet. Returns the caller's future and the opaque."""
        fut = self.pool.submit(
            self.t.request, gofast.BinMessage(REQ_ID, b"question"), None, timeout
        )
        frame = self.raw.read_frame(TIMEOUT)
        assert (frame.kind, frame.id, frame.data) == (REQUEST, REQ_ID, b"question"), frame
        return fut, frame.opaque

    def open_remote_stream(self) -> int:
        """The raw peer opens a stream; waits until the handler took it."""
        opaque = self.raw.next_opaque()
        self.raw.send_frame(STREAM_START, opaque, STREAM_ID, b"open")
        wait_until(lambda: (opaque, b"open") in self.streams.snapshot(), TIMEOUT, "stream handler")
        return opaque


@pytest.fixture(params=["thread", "shared"])
def h(caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest) -> Iterator[Harness]:
    """The victim read by its own reader thread, or by the shared reader."""
    caplog.set_level(logging.DEBUG, logger="gofast")
    posts = Inbox()
    streams = Inbox()

    def on_post(stream: Any, msg: gofast.BinMessage) -> None:
        posts.append((msg.id, msg.data))

    def on_stream(stream: Any, msg: gofast.BinMessage) -> Any:
        opaque = stream.opaque
        streams.append((opaque, msg.data))

        def callback(m: gofast.BinMessage | None) -> None:
            streams.append((opaque, None if m is None else m.data))
            if m is None:
                stream.close()  # the peer is done: close ours, the stream is over

        return callback

    def setup(t: gofast.Transport) -> None:
        t.subscribe(POST_ID, on_post)
        t.subscribe(STREAM_ID, on_stream)

    with ThreadPoolExecutor(2, thread_name_prefix="bad-input") as pool:
        settings = {**SETTINGS, "reader": request.param}
        with wire.raw_server(settings, setup=setup, name="victim") as (raw, t):
            yield Harness(raw, t, posts, streams, pool)


def gofast_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name.startswith("gofast") and r.levelno == level
    ]


def assert_logged(
    caplog: pytest.LogCaptureFixture, *words: str, level: int = logging.DEBUG
) -> None:
    """A ``gofast`` line at ``level`` mentions every word: drops log at
    DEBUG, a protocol error that ends the connection at WARNING."""
    lines = gofast_lines(caplog, level)
    assert any(all(w.lower() in line.lower() for w in words) for line in lines), (
        f"no {logging.getLevelName(level)} line from a 'gofast' logger mentions {words}; "
        f"got {lines}"
    )


def assert_dropped(h: Harness, before: dict[str, int], frame: bytes, *, extra_rx: int = 1) -> None:
    """One frame of ``len(frame)`` bytes was dropped and counted; call after
    a later valid frame was handled (frames are handled in order)."""
    after = h.stats()
    assert after["n_mdrops"] - before["n_mdrops"] == 1
    assert after["n_dropped"] - before["n_dropped"] == len(frame)
    # the bad frame and the valid ones after it were all received
    assert after["n_rx"] - before["n_rx"] == 1 + extra_rx


# ---------------------------------------------------------------------------
# Bodies that break the message format: one helper, three ways to deliver


def deliver_bad_body(
    h: Harness, caplog: pytest.LogCaptureFixture, body: bytes, via: str, *log_words: str
) -> None:
    """Delivers ``body`` in a POST, a REQUEST, the RESPONSE to a pending
    request, a STREAM-START or a message on an open stream, and checks the
    outcome each way."""
    t, raw = h.t, h.raw
    if via == "post":
        before = h.stats()
        frame = raw.send_frame(POST, raw.next_opaque(), body=body)
        h.good_post()
        assert_dropped(h, before, frame)
        assert h.posts.snapshot() == [(POST_ID, b"after-1")], "the bad POST reached the handler"
        assert h.stats()["n_rxpost"] - before["n_rxpost"] == 2
    elif via == "response":
        fut, opaque = h.start_request()
        assert t._exchanges_in_use() == (1, 0)
        before = h.stats()
        frame = raw.send_frame(REQUEST, opaque, body=body)
        with pytest.raises(gofast.ProtocolError):
            fut.result(TIMEOUT)
        h.good_post()
        assert_dropped(h, before, frame)
        assert h.stats()["n_rxresp"] - before["n_rxresp"] == 1
        # the opaque went back to the pool, and the next request works
        assert t._exchanges_in_use() == (0, 0)
        fut, opaque2 = h.start_request()
        raw.send_frame(REQUEST, opaque2, REQ_ID, b"answer")
        assert fut.result(TIMEOUT).data == b"answer"
    elif via == "request":
        # the peer's REQUEST: dropped, and no RESPONSE goes back (the next
        # frame the peer reads below is its ping's answer)
        before = h.stats()
        frame = raw.send_frame(REQUEST, raw.next_opaque(), body=body)
        h.good_post()
        assert_dropped(h, before, frame)
        assert h.stats()["n_rxreq"] - before["n_rxreq"] == 1
    elif via == "stream_start":
        # a STREAM-START whose message is unusable opens no stream
        before = h.stats()
        opaque = raw.next_opaque()
        frame = raw.send_frame(STREAM_START, opaque, body=body)
        h.good_post()
        assert_dropped(h, before, frame)
        assert h.stats()["n_rxstart"] - before["n_rxstart"] == 1
        assert h.streams.snapshot() == []
        assert t._exchanges_in_use() == (0, 0)
    elif via == "stream":
        opaque = h.open_remote_stream()
        before = h.stats()
        frame = raw.send_frame(STREAM_MSG, opaque, body=body)
        raw.send_frame(STREAM_MSG, opaque, STREAM_ID, b"good")
        wait_until(lambda: (opaque, b"good") in h.streams.snapshot(), TIMEOUT, "stream message")
        assert_dropped(h, before, frame)
        assert h.streams.snapshot() == [(opaque, b"open"), (opaque, b"good")]
        # the stream is still fine: end it both ways
        raw.send(encode_finish(opaque))
        fin = raw.read_frame(TIMEOUT)
        assert (fin.kind, fin.opaque) == (FINISH, opaque)
        wait_until(lambda: t._exchanges_in_use() == (0, 0), TIMEOUT, "stream to end")
    else:
        raise AssertionError(via)
    assert_logged(caplog, "dropped", *log_words)
    h.assert_usable()
    assert t._exchanges_in_use() == (0, 0)


VIA = ["post", "request", "response", "stream_start", "stream"]


def msg_map(*entries: bytes) -> bytes:
    return tag(43) + b"\xbf" + b"".join(entries) + b"\xff"


ID_ENTRY = tag(44) + uint(POST_ID)
DATA_ENTRY = tag(45) + bstr(b"payload")


@pytest.mark.parametrize("via", VIA)
def test_body_without_tag_43(h: Harness, caplog: pytest.LogCaptureFixture, via: str) -> None:
    body = b"\xbf" + ID_ENTRY + DATA_ENTRY + b"\xff"  # the map alone, no tag 43
    deliver_bad_body(h, caplog, body, via, "tag 43")


@pytest.mark.parametrize("via", VIA)
def test_map_without_id(h: Harness, caplog: pytest.LogCaptureFixture, via: str) -> None:
    deliver_bad_body(h, caplog, msg_map(DATA_ENTRY), via, "no id")


@pytest.mark.parametrize("via", VIA)
def test_map_without_data(h: Harness, caplog: pytest.LogCaptureFixture, via: str) -> None:
    deliver_bad_body(h, caplog, msg_map(ID_ENTRY), via, "no data")


@pytest.mark.parametrize("via", VIA)
def test_message_id_zero(h: Harness, caplog: pytest.LogCaptureFixture, via: str) -> None:
    deliver_bad_body(h, caplog, encode_body(0, b"payload"), via, "id 0")


@pytest.mark.parametrize("number", [48, 44, 1000])
@pytest.mark.parametrize("via", VIA)
def test_unknown_compression_tag(
    h: Harness, caplog: pytest.LogCaptureFixture, via: str, number: int
) -> None:
    body = tag(number) + bstr(gzip_compress(encode_body(POST_ID, b"payload")))
    deliver_bad_body(h, caplog, body, via, "tag", str(number))


GOOD = encode_body(POST_ID, b"payload " * 8)


def _flip_crc(member: bytes) -> bytes:
    return member[:-8] + bytes([member[-8] ^ 0xFF]) + member[-7:]


CORRUPT_GZIP = {
    "bad-magic": b"\x1f\x8c" + gzip_compress(GOOD)[2:],
    "not-deflate": GZIP_HEADER[:2] + b"\x07" + gzip_compress(GOOD)[3:],
    "invalid-block-type": GZIP_HEADER + b"\x07\x00\x00\x00\x00",
    "truncated-stream": gzip_compress(GOOD, trailer=False)[:-9],
    "crc-mismatch": _flip_crc(gzip_compress(GOOD)),
    "header-only": GZIP_HEADER[:6],
}


@pytest.mark.parametrize("case", sorted(CORRUPT_GZIP))
@pytest.mark.parametrize("via", VIA)
def test_corrupt_gzip(h: Harness, caplog: pytest.LogCaptureFixture, via: str, case: str) -> None:
    deliver_bad_body(h, caplog, tag(46) + bstr(CORRUPT_GZIP[case]), via, "gzip")


CORRUPT_LZW = {
    # after a clear code the table holds only literals, clear and EOF (257)
    "undefined-code-after-clear": lzw_codes([(256, 9), (300, 9), (257, 9)]),
    # two literals define code 258; 400 is still far past the table
    "code-past-table": lzw_codes([(256, 9), (0xD8, 9), (0x2B, 9), (400, 9), (257, 9)]),
}


@pytest.mark.parametrize("case", sorted(CORRUPT_LZW))
@pytest.mark.parametrize("via", VIA)
def test_corrupt_lzw(h: Harness, caplog: pytest.LogCaptureFixture, via: str, case: str) -> None:
    deliver_bad_body(h, caplog, tag(47) + bstr(CORRUPT_LZW[case]), via, "lzw")


BOMB_DATA = bytes(100_000)  # inflates far past FRAME_MAX * 4 = 16 KiB
BOMBS = {
    "gzip": tag(46) + bstr(gzip_compress(encode_body(POST_ID, BOMB_DATA))),
    "gzip-no-trailer": tag(46)
    + bstr(gzip_compress(encode_body(POST_ID, BOMB_DATA), trailer=False)),
    "lzw": tag(47) + bstr(lzw_compress(encode_body(POST_ID, BOMB_DATA))),
    "gzip-in-gzip": tag(46)
    + bstr(gzip_compress(tag(46) + bstr(gzip_compress(encode_body(POST_ID, BOMB_DATA))), level=9)),
}


@pytest.mark.parametrize("case", sorted(BOMBS))
@pytest.mark.parametrize("via", VIA)
def test_decompression_bomb(
    h: Harness, caplog: pytest.LogCaptureFixture, via: str, case: str
) -> None:
    body = BOMBS[case]
    # a small frame that passes frame.max, whose content would not
    assert len(body) < FRAME_MAX // 2
    deliver_bad_body(h, caplog, body, via, "exceeds")


def test_bomb_limit_is_frame_max_times_four(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """Just under the limit decompresses and is delivered; just over is dropped."""
    fits = encode_body(POST_ID, bytes(FRAME_MAX * 4 - 64))
    assert len(fits) <= FRAME_MAX * 4
    h.raw.send_frame(POST, h.raw.next_opaque(), body=tag(46) + bstr(gzip_compress(fits)))
    wait_until(lambda: len(h.posts.snapshot()) == 1, TIMEOUT, "the compressed POST")
    assert h.posts.snapshot() == [(POST_ID, bytes(FRAME_MAX * 4 - 64))]
    assert h.stats()["n_mdrops"] == 0
    deliver_bad_body(
        h,
        caplog,
        tag(46) + bstr(gzip_compress(encode_body(POST_ID, bytes(FRAME_MAX * 4)))),
        "stream",
        "exceeds",
    )


# ---------------------------------------------------------------------------
# Frames that delimit but belong to nothing / are of no known kind


@pytest.mark.parametrize("k", [0x82, 0xC9, 0x9E, 0x00])
def test_unknown_kind_byte_is_dropped(h: Harness, caplog: pytest.LogCaptureFixture, k: int) -> None:
    before = h.stats()
    frame = encode_frame(k, h.raw.next_opaque(), POST_ID, b"payload")
    h.raw.send(frame)
    h.good_post()
    assert_dropped(h, before, frame)
    assert h.posts.snapshot() == [(POST_ID, b"after-1")]
    assert_logged(caplog, "dropped", f"0x{k:02x}")
    h.assert_usable()
    assert h.t._exchanges_in_use() == (0, 0)


def test_finish_for_unknown_opaque(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    before = h.stats()
    frame = encode_finish(4321)  # never used by either side
    h.raw.send(frame)
    h.good_post()
    assert_dropped(h, before, frame)
    assert h.stats()["n_rxfin"] - before["n_rxfin"] == 1
    assert_logged(caplog, "dropped", "finish")
    h.assert_usable()
    assert h.t._exchanges_in_use() == (0, 0)


def test_finish_for_a_stream_already_over(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    opaque = h.open_remote_stream()
    h.raw.send(encode_finish(opaque))
    fin = h.raw.read_frame(TIMEOUT)  # the handler's callback closes our side
    assert (fin.kind, fin.opaque) == (FINISH, opaque)
    wait_until(lambda: h.t._exchanges_in_use() == (0, 0), TIMEOUT, "stream to end")
    before = h.stats()
    frame = encode_finish(opaque)  # a second FINISH
    h.raw.send(frame)
    h.good_post()
    assert_dropped(h, before, frame)
    assert h.streams.snapshot() == [(opaque, b"open"), (opaque, None)], "callback ran twice"
    assert_logged(caplog, "dropped", "finish")
    h.assert_usable()


def test_finish_on_a_pending_requests_opaque(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """A FINISH on the opaque of a request is not a stream's: dropped, and
    the request is untouched."""
    fut, opaque = h.start_request()
    before = h.stats()
    frame = encode_finish(opaque)
    h.raw.send(frame)
    h.good_post()
    assert_dropped(h, before, frame)
    assert not fut.done()
    h.raw.send_frame(REQUEST, opaque, REQ_ID, b"answer")
    assert fut.result(TIMEOUT).data == b"answer"
    assert_logged(caplog, "dropped", "finish")
    h.assert_usable()
    assert h.t._exchanges_in_use() == (0, 0)


def test_stream_msg_for_unknown_opaque(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    before = h.stats()
    frame = encode_frame(STREAM_MSG, 4321, STREAM_ID, b"lost")
    h.raw.send(frame)
    h.good_post()
    assert_dropped(h, before, frame)
    assert h.stats()["n_rxstream"] - before["n_rxstream"] == 1
    assert h.streams.snapshot() == []
    assert_logged(caplog, "dropped", "stream")
    h.assert_usable()
    assert h.t._exchanges_in_use() == (0, 0)


def test_stream_msg_after_the_peers_finish(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    opaque = h.open_remote_stream()
    h.raw.send(encode_finish(opaque))
    fin = h.raw.read_frame(TIMEOUT)
    assert (fin.kind, fin.opaque) == (FINISH, opaque)
    before = h.stats()
    frame = encode_frame(STREAM_MSG, opaque, STREAM_ID, b"too late")
    h.raw.send(frame)
    h.good_post()
    assert_dropped(h, before, frame)
    assert h.streams.snapshot() == [(opaque, b"open"), (opaque, None)]
    assert_logged(caplog, "dropped", "stream")
    h.assert_usable()
    assert h.t._exchanges_in_use() == (0, 0)


def test_stream_msg_on_a_pending_requests_opaque(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    fut, opaque = h.start_request()
    before = h.stats()
    frame = encode_frame(STREAM_MSG, opaque, REQ_ID, b"not a response")
    h.raw.send(frame)
    h.good_post()
    assert_dropped(h, before, frame)
    assert not fut.done()
    h.raw.send_frame(REQUEST, opaque, REQ_ID, b"answer")
    assert fut.result(TIMEOUT).data == b"answer"
    assert_logged(caplog, "dropped", "stream")
    h.assert_usable()
    assert h.t._exchanges_in_use() == (0, 0)


def test_response_after_the_request_timed_out(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    t, raw = h.t, h.raw
    before = h.stats()
    fut = h.pool.submit(t.request, gofast.BinMessage(REQ_ID, b"question"), None, 0.2)
    req = raw.read_frame(TIMEOUT)
    assert (req.kind, req.id) == (REQUEST, REQ_ID)
    with pytest.raises(gofast.Timeout):
        fut.result(TIMEOUT)
    assert h.stats()["n_timeouts"] - before["n_timeouts"] == 1
    # the opaque stays out of the pool until its late RESPONSE shows up
    assert t._exchanges_in_use() == (1, 0)
    late = raw.send_frame(REQUEST, req.opaque, REQ_ID, b"too late")
    h.good_post()
    assert_dropped(h, before, late)
    assert h.stats()["n_rxresp"] - before["n_rxresp"] == 1
    assert t._exchanges_in_use() == (0, 0)
    assert_logged(caplog, "dropped", "timed out")
    # the late RESPONSE was not taken for a REQUEST of the peer's either
    assert h.stats()["n_rxreq"] == before["n_rxreq"]
    h.assert_usable()
    fut, opaque = h.start_request()
    raw.send_frame(REQUEST, opaque, REQ_ID, b"in time")
    assert fut.result(TIMEOUT).data == b"in time"
    assert t._exchanges_in_use() == (0, 0)


def test_frame_of_exactly_frame_max_is_accepted(h: Harness) -> None:
    """The boundary of the next cases: frame.max itself is fine."""
    opaque = h.raw.next_opaque()
    empty = len(encode_frame(POST, opaque, POST_ID, b""))
    # grow the data until the whole frame is frame.max bytes (heads widen)
    n = FRAME_MAX - empty
    while len(encode_frame(POST, opaque, POST_ID, bytes(n))) > FRAME_MAX:
        n -= 1
    frame = encode_frame(POST, opaque, POST_ID, bytes(n))
    assert len(frame) == FRAME_MAX
    h.raw.send(frame)
    wait_until(lambda: len(h.posts.snapshot()) == 1, TIMEOUT, "the frame.max POST")
    assert h.posts.snapshot() == [(POST_ID, bytes(n))]
    assert h.stats()["n_mdrops"] == 0
    h.assert_usable()


# ---------------------------------------------------------------------------
# Bytes that cannot be delimited: the connection must close


class Pending:
    """What is in flight when the bad bytes arrive."""

    def __init__(self, h: Harness) -> None:
        # no timeout of its own: only the connection's end can release it
        self.request, self.request_opaque = h.start_request(math.inf)
        self.local = Inbox()
        h.t.stream(gofast.BinMessage(STREAM_ID, b"ours"), self.local.append)
        start = h.raw.read_frame(TIMEOUT)
        assert (start.kind, start.data) == (STREAM_START, b"ours")
        self.remote_opaque = h.open_remote_stream()
        assert h.t._exchanges_in_use() == (2, 1)


def assert_connection_closed(
    h: Harness, p: Pending, caplog: pytest.LogCaptureFixture, *log_words: str
) -> None:
    t = h.t
    # the caller waiting for a RESPONSE is failed, not left hanging, and
    # told that the peer broke the protocol (it may not speak gofast at all)
    with pytest.raises(gofast.ProtocolError):
        p.request.result(TIMEOUT)
    wait_until(lambda: t.closed, TIMEOUT, "the transport to close")
    # both open streams are told they ended
    assert p.local.wait_for(1, TIMEOUT) == [None]
    wait_until(
        lambda: (p.remote_opaque, None) in h.streams.snapshot(), TIMEOUT, "remote stream end"
    )
    assert t._exchanges_in_use() == (0, 0)
    # the peer sees the connection end (it is not left talking to a wall)
    h.raw.wait_closed(TIMEOUT)
    # and every later call fails at once
    with pytest.raises(gofast.ConnectionClosed):
        t.post(gofast.BinMessage(POST_ID, b"x"))
    with pytest.raises(gofast.ConnectionClosed):
        t.request(gofast.BinMessage(REQ_ID, b"x"), timeout=TIMEOUT)
    with pytest.raises(gofast.ConnectionClosed):
        t.stream(gofast.BinMessage(STREAM_ID, b"x"), lambda m: None)
    assert_logged(caplog, "connection ends", *log_words, level=logging.WARNING)


VALID = encode_frame(POST, 5999, POST_ID, b"payload")

WRONG_MARKERS = {
    "http": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "last-marker-byte": b"\xd9\xd9\xf6" + VALID[3:],
    "first-byte": b"\x00" + VALID[1:],
    "after-a-good-frame": VALID + b"\xd9\x00",
}


@pytest.mark.parametrize("case", sorted(WRONG_MARKERS))
def test_wrong_marker_closes(h: Harness, caplog: pytest.LogCaptureFixture, case: str) -> None:
    p = Pending(h)
    before = h.stats()
    h.raw.send(WRONG_MARKERS[case])
    assert_connection_closed(h, p, caplog, "marker")
    after = h.stats()
    assert after["n_mdrops"] - before["n_mdrops"] == 1
    if case == "after-a-good-frame":
        assert h.posts.snapshot() == [(POST_ID, b"payload")], (
            "the frame before the bad bytes was lost"
        )


@pytest.mark.parametrize("cut", [2, 4, 5, 6, 20, len(VALID) - 1])
def test_truncated_frame_closes(h: Harness, caplog: pytest.LogCaptureFixture, cut: int) -> None:
    """The peer ends the connection in the middle of a frame."""
    big = encode_frame(POST, 5999, POST_ID, bytes(300))  # a 2-byte packet head
    frame = big if cut in (5, 6) else VALID
    p = Pending(h)
    h.raw.send(frame[:cut])
    h.raw.shutdown_write()
    assert_connection_closed(h, p, caplog, "inside a frame")
    assert h.posts.snapshot() == []


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


OVERSIZED = {
    # 1 GiB claimed, nothing of it sent
    "1GiB": wire.MARKER + bytes([POST]) + b"\x5a" + (1 << 30).to_bytes(4, "big"),
    "2**64-1": wire.MARKER + bytes([REQUEST]) + b"\x5b" + b"\xff" * 8,
    "finish-4GiB": wire.MARKER + bytes([FINISH]) + b"\x5a\xff\xff\xff\xff",
    # one byte past frame.max: marker, K and a 3-byte head are 7 bytes
    "frame.max+1": wire.MARKER + bytes([POST]) + b"\x59" + (FRAME_MAX - 7 + 1).to_bytes(2, "big"),
}


@pytest.mark.parametrize("case", sorted(OVERSIZED))
def test_length_past_frame_max_closes_at_once(
    h: Harness, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    """Refused from the head alone: the transport neither waits for the
    claimed bytes (we never send them and keep the socket open) nor
    allocates room for them."""
    p = Pending(h)
    rss = _peak_rss_bytes()
    h.raw.send(OVERSIZED[case])
    assert_connection_closed(h, p, caplog, "exceeds the maximum")
    assert _peak_rss_bytes() - rss < 256 << 20, "peak memory grew by the claimed length"


@pytest.mark.parametrize("k", [0x00, 0x5F, 0x9F, 0xFF, 0xD9])
def test_packet_that_is_not_a_byte_string_closes(
    h: Harness, caplog: pytest.LogCaptureFixture, k: int
) -> None:
    """After marker and K the packet's byte-string head gives the frame's
    length; anything else (an indefinite byte string included) leaves the
    stream without a way to find the next frame."""
    p = Pending(h)
    before = h.stats()
    h.raw.send(wire.MARKER + bytes([POST, k]) + VALID[5:])
    assert_connection_closed(h, p, caplog, "byte string")
    assert h.stats()["n_mdrops"] - before["n_mdrops"] == 1


# ---------------------------------------------------------------------------
# Packets that delimit but are malformed inside


def _pkt(kind: int, content: bytes, trailer: bytes = b"") -> bytes:
    return wire.MARKER + bytes([kind]) + bstr(content) + trailer


BODY = encode_body(POST_ID, b"payload")
MALFORMED_PACKETS = {
    "reserved-opaque-1001": encode_frame(POST, 1001, POST_ID, b"payload"),
    "opaque-below-266": encode_frame(POST, 265, POST_ID, b"payload"),
    "opaque-past-15309735": encode_frame(POST, 15_309_736, POST_ID, b"payload"),
    "finish-reserved-opaque-55799": encode_finish(55799),
    "no-opaque-tag": _pkt(POST, bstr(BODY)),
    "empty-packet": _pkt(POST, b""),
    "truncated-opaque": _pkt(POST, b"\xd9\x13"),
    "body-not-a-byte-string": _pkt(POST, tag(5000) + b"\x18\x64"),
    "body-runs-past-packet": _pkt(POST, tag(5000) + b"\x58\x40" + BODY),
    "bytes-after-body": _pkt(POST, tag(5000) + bstr(BODY) + b"\x00"),
    "finish-with-a-body": _pkt(FINISH, tag(5000) + bstr(b"x"), b"\xff"),
    "finish-without-empty-bstr": _pkt(FINISH, tag(5000), b"\xff"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_PACKETS))
def test_malformed_packet_is_dropped(
    h: Harness, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    frame = MALFORMED_PACKETS[case]
    before = h.stats()
    h.raw.send(frame)
    h.good_post()
    assert_dropped(h, before, frame)
    assert h.posts.snapshot() == [(POST_ID, b"after-1")]
    assert_logged(caplog, "dropped")
    h.assert_usable()
    assert h.t._exchanges_in_use() == (0, 0)


# ---------------------------------------------------------------------------
# Frames on opaques that belong to another kind of exchange


def test_response_on_the_opaque_of_our_stream(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """An ``81`` frame on the opaque of a stream the transport opened is
    neither a RESPONSE nor a new REQUEST: dropped; the stream goes on."""
    inbox = Inbox()
    stream = h.t.stream(gofast.BinMessage(STREAM_ID, b"ours"), inbox.append)
    start = h.raw.read_frame(TIMEOUT)
    assert (start.kind, start.opaque) == (STREAM_START, stream.opaque)
    before = h.stats()
    frame = h.raw.send_frame(REQUEST, stream.opaque, REQ_ID, b"misdirected")
    h.good_post()
    assert_dropped(h, before, frame)
    assert_logged(caplog, "dropped")
    h.raw.send_frame(STREAM_MSG, stream.opaque, STREAM_ID, b"fine")
    assert [m.data for m in inbox.wait_for(1, TIMEOUT)] == [b"fine"]
    stream.close()
    assert h.raw.read_frame(TIMEOUT).kind == FINISH
    h.raw.send(encode_finish(stream.opaque))
    assert inbox.wait_for(2, TIMEOUT)[-1] is None
    wait_until(lambda: h.t._exchanges_in_use() == (0, 0), TIMEOUT, "the stream to end")
    h.assert_usable()


def test_stream_start_on_an_opaque_in_use(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """A second STREAM-START on an open stream's opaque, and one on the
    opaque of the transport's pending request: both dropped, nothing lost."""
    opaque = h.open_remote_stream()
    fut, req_opaque = h.start_request()
    before = h.stats()
    again = h.raw.send_frame(STREAM_START, opaque, STREAM_ID, b"again")
    h.good_post()
    assert_dropped(h, before, again)
    before = h.stats()
    on_req = h.raw.send_frame(STREAM_START, req_opaque, STREAM_ID, b"on a request")
    h.good_post()
    assert_dropped(h, before, on_req)
    assert h.streams.snapshot() == [(opaque, b"open")]
    assert h.t._exchanges_in_use() == (1, 1)
    assert not fut.done()
    h.raw.send_frame(REQUEST, req_opaque, REQ_ID, b"answer")
    assert fut.result(TIMEOUT).data == b"answer"
    h.raw.send(encode_finish(opaque))
    assert h.raw.read_frame(TIMEOUT).kind == FINISH
    wait_until(lambda: h.t._exchanges_in_use() == (0, 0), TIMEOUT, "the stream to end")
    assert_logged(caplog, "dropped", "in use")
    h.assert_usable()


@pytest.mark.parametrize("msg_id", [0x1000, 0x1002, 0x100F])
def test_post_with_a_reserved_id_is_dropped(
    h: Harness, caplog: pytest.LogCaptureFixture, msg_id: int
) -> None:
    before = h.stats()
    frame = h.raw.post(msg_id, b"payload")
    h.good_post()
    assert_dropped(h, before, frame)
    assert_logged(caplog, "dropped", "reserved")
    h.assert_usable()


def test_bad_frames_one_byte_at_a_time(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """Dropped frames, split anywhere by TCP, do not upset the next ones."""
    h.raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    bad = [
        encode_frame(0x82, 5000, POST_ID, b"x" * 300),
        encode_frame(POST, 5001, body=encode_body(0, b"zero")),
        encode_finish(4321),
    ]
    good = encode_frame(POST, 5002, POST_ID, b"good")
    before = h.stats()
    for byte in b"".join(bad) + good:
        h.raw.send(bytes([byte]))
    wait_until(lambda: len(h.posts.snapshot()) == 1, TIMEOUT, "the good POST")
    after = h.stats()
    assert h.posts.snapshot() == [(POST_ID, b"good")]
    assert after["n_mdrops"] - before["n_mdrops"] == 3
    assert after["n_dropped"] - before["n_dropped"] == sum(map(len, bad))
    h.assert_usable()


# ---------------------------------------------------------------------------
# Bad input inside the handshake itself


@pytest.fixture
def bare(
    caplog: pytest.LogCaptureFixture,
) -> Iterator[tuple[wire.RawPeer, gofast.Transport, ThreadPoolExecutor]]:
    caplog.set_level(logging.WARNING, logger="gofast")
    with ThreadPoolExecutor(1, thread_name_prefix="bad-handshake") as pool:
        with wire.raw_server(SETTINGS, handshake=False, name="victim") as (raw, t):
            yield raw, t, pool


def test_garbage_instead_of_a_whoami(bare: Any, caplog: pytest.LogCaptureFixture) -> None:
    """The handshake fails at once with a ProtocolError that shows what
    came instead (the peer is no gofast peer); it does not sit out its
    timeout."""
    raw, t, pool = bare
    done = pool.submit(t.handshake, 60.0)
    req = raw.read_frame(TIMEOUT)
    assert req.id == wire.WHOAMI_ID
    raw.send(b"SSH-2.0-OpenSSH_9.6\r\n")
    with pytest.raises(gofast.ProtocolError, match="marker 53 53 48, want d9 d9 f7"):
        done.result(TIMEOUT)
    assert t.closed
    raw.wait_closed(TIMEOUT)
    assert t._exchanges_in_use() == (0, 0)
    assert_logged(caplog, "connection ends", "marker", level=logging.WARNING)


def test_silent_peer_times_out_the_handshake_without_holding_an_opaque(bare: Any) -> None:
    """A peer that never answers our whoami: handshake() raises Timeout in
    time, the whoami request's opaque is given back, and the timeout counts."""
    raw, t, _pool = bare
    with pytest.raises(gofast.Timeout):
        t.handshake(0.3)
    request = raw.read_frame(TIMEOUT)
    assert request.id == wire.WHOAMI_ID
    assert t.stats()["n_timeouts"] == 1
    assert t._exchanges_in_use() == (1, 0), "quarantined until the late answer"
    dropped = t.stats()["n_mdrops"]
    raw.send_frame(wire.REQUEST, request.opaque, wire.WHOAMI_ID, raw.whoami())
    # Frames are handled in order: once the ping is answered, so is the whoami.
    assert raw.ping("sync", TIMEOUT) == b"sync"
    assert t._exchanges_in_use() == (0, 0), "the late whoami frees the opaque"
    assert t.stats()["n_mdrops"] == dropped + 1


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x05ab", b"\x03raw\x01" + b"\x00" * 5, b"\x03raw\xff" + b"\x00" * 10],
    ids=["empty", "short-name", "short-buffersize", "bad-version-head"],
)
def test_malformed_whoami_answer(bare: Any, payload: bytes) -> None:
    """A whoami RESPONSE whose payload does not parse: ProtocolError."""
    raw, t, pool = bare
    done = pool.submit(t.handshake, 60.0)
    req = raw.read_frame(TIMEOUT)
    raw.send_frame(REQUEST, req.opaque, wire.WHOAMI_ID, payload)
    with pytest.raises(gofast.ProtocolError):
        done.result(TIMEOUT)
    assert t._exchanges_in_use() == (0, 0)


def test_whoami_answer_with_a_broken_body(bare: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="gofast")
    raw, t, pool = bare
    done = pool.submit(t.handshake, 60.0)
    req = raw.read_frame(TIMEOUT)
    before = dict(t.stats())
    frame = raw.send_frame(REQUEST, req.opaque, body=msg_map(DATA_ENTRY))
    with pytest.raises(gofast.ProtocolError):
        done.result(TIMEOUT)
    after = dict(t.stats())
    assert after["n_mdrops"] - before["n_mdrops"] == 1
    assert after["n_dropped"] - before["n_dropped"] == len(frame)
    assert t._exchanges_in_use() == (0, 0)
    assert_logged(caplog, "dropped", "no id")
