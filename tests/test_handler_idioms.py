"""Handlers in Python's idiom: a REQUEST handler may return its reply; one
that neither returns nor sends one is warned about (once per message id,
without the x-errors extension); a stream handler may be a generator."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import gofast
from conftest import LogRecords, Pair
from gofast import BinMessage

ECHO_ID, SILENT_ID, OTHER_SILENT_ID, GEN_ID, GO_ID = 300, 301, 302, 303, 304
UNANSWERED = "returned without a reply"


@pytest.fixture
def gofast_log() -> Iterator[LogRecords]:
    handler = LogRecords()
    logger = logging.getLogger("gofast")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def test_a_returned_message_is_the_reply(pair_factory: Any) -> None:
    def echo(stream: Any, msg: BinMessage) -> BinMessage:
        return BinMessage(ECHO_ID, b"re: " + msg.data)

    p: Pair = pair_factory(server_setup=lambda t: t.subscribe(ECHO_ID, echo))
    reply = p.client.request(BinMessage(ECHO_ID, b"hi"), timeout=10)
    assert (reply.id, reply.data) == (ECHO_ID, b"re: hi")
    assert p.server.stats()["n_handler_errors"] == 0


def test_returning_a_reply_after_responding_is_reported(pair_factory: Any) -> None:
    def both(stream: Any, msg: BinMessage) -> BinMessage:
        stream.respond(BinMessage(ECHO_ID, b"first"))
        return BinMessage(ECHO_ID, b"second")

    p: Pair = pair_factory(server_setup=lambda t: t.subscribe(ECHO_ID, both))
    assert p.client.request(BinMessage(ECHO_ID, b""), timeout=10).data == b"first"
    # The handler error is counted in the same dispatch, before the next
    # request is read: a second round trip proves it was.
    p.client.request(BinMessage(ECHO_ID, b""), timeout=10)
    assert p.server.stats()["n_handler_errors"] == 2


def test_an_unanswered_request_warns_once_per_message_id(
    pair_factory: Any, gofast_log: LogRecords
) -> None:
    def silent(stream: Any, msg: BinMessage) -> None:
        return None

    def echo(stream: Any, msg: BinMessage) -> BinMessage:
        return msg

    def setup(t: Any) -> None:
        t.subscribe(SILENT_ID, silent).subscribe(OTHER_SILENT_ID, silent)
        t.subscribe(ECHO_ID, echo)

    # The warning is for a server without x-errors (on by default; under it
    # the requester gets a RemoteError instead, tests/test_remote_errors.py).
    p: Pair = pair_factory(server_setup=setup, server_settings={"errors.extension": False})
    for msg_id in (SILENT_ID, SILENT_ID, OTHER_SILENT_ID, SILENT_ID):
        with pytest.raises(gofast.Timeout):
            p.client.request(BinMessage(msg_id, b""), timeout=0.3)
    # Frames are handled in order: this reply follows every warning.
    p.client.request(BinMessage(ECHO_ID, b""), timeout=10)
    warned = gofast_log.at(logging.WARNING, UNANSWERED)
    assert len(warned) == 2, warned
    assert any(f"message id {SILENT_ID} " in w for w in warned)
    assert any(f"message id {OTHER_SILENT_ID} " in w for w in warned)


def test_a_generator_stream_handler_sends_its_yields_then_closes(pair_factory: Any) -> None:
    go = threading.Event()

    def gen(stream: Any, msg: BinMessage) -> Iterator[BinMessage]:
        yield BinMessage(GEN_ID, b"one")
        # The reader thread must stay free while the generator waits: the
        # POST that sets `go` is handled by it.
        assert go.wait(10)
        yield BinMessage(GEN_ID, b"two")
        yield BinMessage(GEN_ID, msg.data)

    def on_go(stream: Any, msg: BinMessage) -> None:
        go.set()

    def setup(t: Any) -> None:
        t.subscribe(GEN_ID, gen).subscribe(GO_ID, on_go)

    p: Pair = pair_factory(server_setup=setup)
    with p.client.stream(BinMessage(GEN_ID, b"three")) as s:
        first = s.recv(timeout=10)
        assert first is not None and first.data == b"one"
        p.client.post(BinMessage(GO_ID, b""), flush=True)
        rest = [m.data for m in s]
    assert rest == [b"two", b"three"]
    assert s.error is None
