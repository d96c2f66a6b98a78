"""A lone requester reads its own RESPONSE off the socket instead of waiting
for the reader thread to hand it over. Whatever else arrives in the same
reads (POSTs, a partial frame, bad bytes, the end of the connection) must
still reach the reader thread whole and in order. Over TLS the requester
decrypts what it reads, so what it leaves is no longer in the socket: the
reader must learn of it all the same (the ``tls`` cases)."""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

import gofast
from conftest import Collector, wait_until
from gofast import BinMessage
from wire import POST, REQUEST, RawPeer, encode_frame, raw_server

ECHO_ID = 700
NOTE_ID = 701


@pytest.fixture(params=[False, True], ids=["plain", "tls"])
def tls(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(1, thread_name_prefix="requester") as p:
        yield p


def start_request(
    pool: ThreadPoolExecutor, transport: gofast.Transport, raw: RawPeer, data: bytes
) -> tuple[Future[Any], int]:
    """Starts ``transport.request()`` on a thread; returns its future and the
    opaque of the REQUEST as the raw peer read it."""
    reply = pool.submit(transport.request, BinMessage(ECHO_ID, data), None, 10.0)
    frame = raw.read_frame()
    assert (frame.kind, frame.id, frame.data) == (REQUEST, ECHO_ID, data), frame
    return reply, frame.opaque


def subscribe_notes(collector: Collector) -> Any:
    return lambda t: t.subscribe(NOTE_ID, lambda _s, m: collector.append(m.data))


@pytest.mark.parametrize(
    "before, after",
    [(0, 0), (1, 0), (0, 1), (3, 3)],
    ids=["alone", "post-first", "post-after", "posts-around"],
)
def test_response_and_posts_in_one_write_all_arrive_in_order(
    pool: ThreadPoolExecutor, collector: Collector, before: int, after: int, tls: bool
) -> None:
    with raw_server(setup=subscribe_notes(collector), tls=tls) as (raw, transport):
        reply, opaque = start_request(pool, transport, raw, b"question")
        notes = [f"note {i}".encode() for i in range(before + after)]
        posts = [encode_frame(POST, raw.next_opaque(), NOTE_ID, n) for n in notes]
        response = encode_frame(REQUEST, opaque, ECHO_ID, b"answer")
        raw.send(b"".join(posts[:before] + [response] + posts[before:]))

        assert reply.result(timeout=10) == BinMessage(ECHO_ID, b"answer")
        assert collector.wait_for(len(notes)) == notes
        stats = transport.stats()
        assert stats["n_rxresp"] == 2  # + whoami
        assert stats["n_rxpost"] == len(notes)
        assert stats["n_dropped"] == 0


def test_response_split_across_reads_is_put_together(pool: ThreadPoolExecutor, tls: bool) -> None:
    with raw_server(tls=tls) as (raw, transport):
        reply, opaque = start_request(pool, transport, raw, b"q")
        response = encode_frame(REQUEST, opaque, ECHO_ID, b"a" * 300)
        received = transport.stats()["n_rxbyte"]
        raw.send(response[:100])
        # Someone (requester or reader) has read the first part before the rest is sent.
        wait_until(lambda: transport.stats()["n_rxbyte"] == received + 100, what="first part read")
        raw.send(response[100:])
        assert reply.result(timeout=10) == BinMessage(ECHO_ID, b"a" * 300)


def test_bad_bytes_after_the_response_close_the_connection(
    pool: ThreadPoolExecutor, caplog: pytest.LogCaptureFixture, tls: bool
) -> None:
    with raw_server(tls=tls) as (raw, transport):
        reply, opaque = start_request(pool, transport, raw, b"q")
        raw.send(encode_frame(REQUEST, opaque, ECHO_ID, b"a") + b"\x00" * 16)
        assert reply.result(timeout=10) == BinMessage(ECHO_ID, b"a")
        raw.wait_closed()
        wait_until(lambda: transport.closed, what="transport closed")
        with pytest.raises(gofast.ConnectionClosed):
            transport.request(BinMessage(ECHO_ID, b"again"), timeout=10)


def test_peer_closing_instead_of_answering_fails_the_request(
    pool: ThreadPoolExecutor, tls: bool
) -> None:
    with raw_server(tls=tls) as (raw, transport):
        reply, _ = start_request(pool, transport, raw, b"q")
        raw.shutdown_write()
        with pytest.raises(gofast.ConnectionClosed):
            reply.result(timeout=10)  # at once, not after the 10 s timeout


def test_peer_ending_right_after_its_answer_is_seen(pool: ThreadPoolExecutor, tls: bool) -> None:
    """The answer and the end come together; over TLS the end is a
    close_notify with the TCP connection left open, so only the bytes that
    the requester read say the peer is done."""
    with raw_server(tls=tls) as (raw, transport):
        reply, opaque = start_request(pool, transport, raw, b"q")
        raw.send(encode_frame(REQUEST, opaque, ECHO_ID, b"a"))
        if tls:
            # Sends close_notify, and would then wait for the peer's.
            raw.sock.setblocking(False)
            with pytest.raises(ssl.SSLWantReadError):
                raw.sock.unwrap()  # type: ignore[attr-defined]
        else:
            raw.shutdown_write()
        assert reply.result(timeout=10) == BinMessage(ECHO_ID, b"a")
        wait_until(lambda: transport.closed, what="transport closed")


def test_posts_between_responses_keep_their_order_under_load(
    pair_factory: Any, collector: Collector
) -> None:
    """The server posts three notes before each answer, so notes and responses
    share the client's reads in every combination the timing gives."""

    def answer(stream: gofast.Stream | None, msg: BinMessage) -> None:
        assert stream is not None
        for k in range(3):
            server.post(BinMessage(NOTE_ID, msg.data + b"/%d" % k))
        stream.respond(msg)

    p = pair_factory(
        client_setup=subscribe_notes(collector),
        server_setup=lambda t: t.subscribe(ECHO_ID, answer),
    )
    server = p.server
    n = 2_000
    for i in range(n):
        data = b"%d" % i
        assert p.client.request(BinMessage(ECHO_ID, data), timeout=10).data == data
    want = [b"%d/%d" % (i, k) for i in range(n) for k in range(3)]
    assert collector.wait_for(len(want)) == want
    assert p.client.stats()["n_dropped"] == 0


def test_a_broken_tls_record_instead_of_the_answer_fails_the_request(
    pool: ThreadPoolExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    """Whoever meets the bad record first (the requester, reading for its
    answer, or the reader), the reader meets the failure too and ends the
    connection, failing the request at once, rather than waiting for bytes
    that never come."""
    with raw_server(tls=True) as (raw, transport):
        reply, _ = start_request(pool, transport, raw, b"q")
        # An application-data record whose tag cannot check out, written
        # beside the TLS session onto its socket.
        os.write(raw.sock.fileno(), b"\x17\x03\x03\x00\x20" + b"\x00" * 32)
        with pytest.raises(gofast.ConnectionClosed):
            reply.result(timeout=10)  # at once, not after the 10 s timeout
        assert transport.closed
