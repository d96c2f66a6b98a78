"""Limits against a hostile peer: how many streams it may keep open, how long
it may stay silent, and how many log lines its bad frames may cost. A raw
peer (tests/wire.py) plays the hostile side against a real transport."""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import gofast
import wire
from conftest import Collector, LogRecords, make_pair, wait_until
from wire import FINISH, REQUEST, STREAM_START, encode_finish, encode_frame

STREAM_ID = 102
POST_ID = 100
REQ_ID = 101
TIMEOUT = 10.0

# The log limit (src/log_limit.rs): a burst of lines, then a steady rate.
LOG_BURST, LOG_PER_SECOND = 20, 5


@pytest.fixture
def gofast_log() -> Iterator[LogRecords]:
    handler = LogRecords()
    logger = logging.getLogger("gofast")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


# ---------------------------------------------------------------------------
# Settings


def test_defaults_and_validation() -> None:
    for dialed in (True, False):
        d = gofast.default_settings(dialed)
        assert d["streams.max"] == 10_000
        assert d["idle.timeout"] is None
    with socket.create_server(("127.0.0.1", 0)) as lis:
        addr = lis.getsockname()[:2]
        for bad in (
            {"streams.max": 0},
            {"streams.max": -1},
            {"idle.timeout": 0},
            {"idle.timeout": -1.0},
            {"idle.timeout": 1e9},
        ):
            with pytest.raises(gofast.SettingsError):
                gofast.Transport.connect(addr, settings=bad)
    settings = {"streams.max": 7, "idle.timeout": 2.5}
    with wire.raw_server(settings, handshake=False) as (_, t):
        assert {k: t.settings[k] for k in settings} == settings


# ---------------------------------------------------------------------------
# streams.max


def test_streams_beyond_the_limit_are_finished_and_not_kept() -> None:
    """The peer opens limit+N streams and finishes none: the first `limit`
    reach the handler, the other N are answered with FINISH, dropped and
    counted, and the table never holds more than `limit`."""
    limit, extra = 40, 400
    opened = Collector()
    callbacks: dict[int, Any] = {}

    def on_stream(stream: Any, msg: gofast.BinMessage) -> Any:
        opened.append(stream.opaque)
        callbacks[stream.opaque] = stream

        def callback(m: gofast.BinMessage | None) -> None:
            if m is None:
                stream.close()

        return callback

    def setup(t: gofast.Transport) -> None:
        t.subscribe(STREAM_ID, on_stream)

    with wire.raw_server({"streams.max": limit}, setup=setup, name="victim") as (raw, t):
        before = dict(t.stats())
        opaques = [raw.next_opaque() for _ in range(limit + extra)]
        raw.send(b"".join(encode_frame(STREAM_START, o, STREAM_ID, b"open") for o in opaques))
        # A ping after them: its echo means every STREAM-START was handled.
        ping = raw.next_opaque()
        raw.send_frame(REQUEST, ping, wire.PING_ID, wire.ping_payload("after"))
        finished, echoed = [], False
        deadline = time.monotonic() + TIMEOUT
        while not echoed or len(finished) < extra:
            f = raw.read_frame(max(0.1, deadline - time.monotonic()))
            if f.kind == FINISH:
                finished.append(f.opaque)
            else:
                assert (f.kind, f.opaque, f.id) == (REQUEST, ping, wire.PING_ID), f
                echoed = True
        assert sorted(opened.snapshot()) == opaques[:limit]
        assert finished == opaques[limit:]
        assert t._exchanges_in_use() == (0, limit)
        after = dict(t.stats())
        assert after["n_rxstart"] - before["n_rxstart"] == limit + extra
        assert after["n_mdrops"] - before["n_mdrops"] == extra
        assert after["n_txfin"] - before["n_txfin"] == extra
        # A stream that ends makes room for one more.
        raw.send(encode_finish(opaques[0]))
        fin = raw.read_frame(TIMEOUT)  # the handler's callback closes our side
        assert (fin.kind, fin.opaque) == (FINISH, opaques[0])
        wait_until(lambda: t._exchanges_in_use() == (0, limit - 1), TIMEOUT, "stream to end")
        late = raw.next_opaque()
        raw.send_frame(STREAM_START, late, STREAM_ID, b"open")
        opened.wait_for(limit + 1, TIMEOUT)
        assert opened.snapshot()[-1] == late
        assert t._exchanges_in_use() == (0, limit)
        assert not t.closed


def test_a_gofast_peer_refused_a_stream_sees_it_end() -> None:
    """Two transports: the opener of a stream past the limit gets its end
    (callback None) instead of a stream that waits forever."""
    held = Collector()

    def on_stream(stream: Any, msg: gofast.BinMessage) -> Any:
        held.append(stream)
        return lambda m: None

    p = make_pair(
        server_setup=lambda t: t.subscribe(STREAM_ID, on_stream),
        server_settings={"streams.max": 2},
    )
    try:
        inboxes = [Collector() for _ in range(3)]
        streams = [
            p.client.stream(gofast.BinMessage(STREAM_ID, b"%d" % i), box.append)
            for i, box in enumerate(inboxes)
        ]
        assert inboxes[2].wait_for(1, TIMEOUT) == [None]
        held.wait_for(2, TIMEOUT)
        assert p.server._exchanges_in_use() == (0, 2)
        assert inboxes[0].snapshot() == inboxes[1].snapshot() == []
        for s in streams:
            s.close()
    finally:
        p.close()


# ---------------------------------------------------------------------------
# idle.timeout


def test_a_silent_peer_is_closed_after_the_idle_timeout() -> None:
    """Handshake, then nothing: the transport closes the connection in about
    idle.timeout, and says why."""
    idle = 0.3
    with wire.raw_server({"idle.timeout": idle}, name="victim") as (raw, t):
        began = time.monotonic()
        raw.wait_closed(TIMEOUT)
        took = time.monotonic() - began
        wait_until(lambda: t.closed, TIMEOUT, "the transport to close")
        # The raw peer's last byte came just before `began`.
        assert idle - 0.05 <= took < idle + 2.0, took
        with pytest.raises(gofast.ConnectionClosed, match="idle"):
            t.post(gofast.BinMessage(POST_ID, b"late"))


def test_idle_close_fails_a_pending_request_with_the_reason() -> None:
    """A request is waiting (so the reader polls while the requester may read):
    the idle close still comes, and the caller's ConnectionClosed says idle."""
    with ThreadPoolExecutor(1) as pool:
        with wire.raw_server({"idle.timeout": 0.3}, name="victim") as (raw, t):
            fut = pool.submit(t.request, gofast.BinMessage(REQ_ID, b"q"), None, TIMEOUT)
            req = raw.read_frame(TIMEOUT)
            assert (req.kind, req.id) == (REQUEST, REQ_ID)
            with pytest.raises(gofast.ConnectionClosed, match="idle"):
                fut.result(TIMEOUT)
            raw.wait_closed(TIMEOUT)


def test_heartbeats_keep_an_idle_connection_open() -> None:
    """A peer that sends heartbeats more often than idle.timeout stays
    connected well past it; once they stop, the connection closes."""
    idle = 0.3
    p = make_pair(server_settings={"idle.timeout": idle})
    try:
        p.client.send_heartbeat(0.05)
        began = time.monotonic()
        # Beats arriving for 4 timeouts' worth of time, the server open throughout.
        wait_until(
            lambda: p.server.closed or time.monotonic() - began > 4 * idle, TIMEOUT, "4 timeouts"
        )
        assert not p.server.closed
        assert p.server.stats()["n_rxbeats"] >= 4
        p.client.send_heartbeat(None)
        wait_until(lambda: p.server.closed, TIMEOUT, "the idle close")
    finally:
        p.close()


# ---------------------------------------------------------------------------
# The log limit


def test_a_flood_of_bad_frames_costs_a_few_log_lines(gofast_log: LogRecords) -> None:
    """20,000 frames that are each dropped (half by the decoder, half by
    dispatch): every one counted, but only a handful logged."""
    posts = Collector()

    def setup(t: gofast.Transport) -> None:
        t.subscribe(POST_ID, lambda s, m: posts.append(m.data))

    with wire.raw_server(setup=setup, name="victim") as (raw, t):
        before = dict(t.stats())
        base = len(gofast_log.at(logging.DEBUG))
        bad = [
            encode_frame(0x82, 5000, POST_ID, b"x") if i % 2 else encode_finish(4321)
            for i in range(20_000)
        ]
        began = time.monotonic()
        raw.send(b"".join(bad))
        raw.post(POST_ID, b"after")
        posts.wait_for(1, TIMEOUT)
        elapsed = time.monotonic() - began
        lines = len(gofast_log.at(logging.DEBUG)) - base
        assert lines <= LOG_BURST + LOG_PER_SECOND * elapsed + 1, (lines, elapsed)
        after = dict(t.stats())
        assert after["n_mdrops"] - before["n_mdrops"] == len(bad)
        assert after["n_dropped"] - before["n_dropped"] == sum(map(len, bad))
        suppressed = after["n_log_suppressed"] - before["n_log_suppressed"]
        assert suppressed == len(bad) - lines

        # Once the rate allows a line again, it says how many were left out:
        # with it, the lines' counts add up to every line left out.
        deadline = time.monotonic() + TIMEOUT
        while len(gofast_log.at(logging.DEBUG)) == base + lines:
            assert time.monotonic() < deadline, "no line logged after the flood"
            raw.send(encode_finish(4321))
            assert raw.ping("sync") == b"sync"
        told = [
            int(m.group(1))
            for w in gofast_log.at(logging.DEBUG)[base:]
            if (m := re.search(r"\((\d+) more such lines were left out", w))
        ]
        assert told, gofast_log.at(logging.DEBUG)[-1]
        assert sum(told) == t.stats()["n_log_suppressed"] - before["n_log_suppressed"]
        assert raw.ping("still there") == b"still there"
        assert not t.closed
