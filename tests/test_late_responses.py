"""A timed-out request is not over on the peer's side: its late RESPONSE
must never reach a newer request, nor be taken for a REQUEST of the peer's.
Its opaque stays out of use until that RESPONSE arrives (then it is dropped
and counted) or the connection ends; a range full of them makes new
requests fail at once with OpaqueExhausted."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import gofast
from conftest import wait_until
from gofast import BinMessage

HELD_ID = 120  # the server holds these requests until told to answer


class Holder:
    """A server handler that keeps REQUESTs, then answers each with its own
    payload (so a reply names the request it answers)."""

    def __init__(self) -> None:
        self.held: list[tuple[Any, bytes]] = []
        self.lock = threading.Lock()

    def __call__(self, stream: Any, msg: BinMessage) -> None:
        if msg.data.startswith(b"NEW"):
            stream.respond(BinMessage(HELD_ID, b"re: " + msg.data))
            return
        with self.lock:
            self.held.append((stream, msg.data))

    def count(self) -> int:
        with self.lock:
            return len(self.held)

    def answer_all(self) -> None:
        with self.lock:
            held, self.held = self.held, []
        for stream, data in held:
            stream.respond(BinMessage(HELD_ID, b"re: " + data), flush=False)


def late_pair(pair_factory: Any, holder: Holder, **client_settings: Any) -> Any:
    return pair_factory(
        client_settings=client_settings or None,
        client_setup=lambda t: t.default_handler(lambda s, m: pytest.fail(f"client got {m}")),
        server_setup=lambda t: t.subscribe(HELD_ID, holder),
        # The holder answers after its handler returned: that needs x-errors
        # off on the server (under it, the default, returning without a
        # reply fails the request at once with RemoteError NoResponse).
        server_settings={"errors.extension": False},
    )


def test_ten_thousand_late_responses_reach_nobody(pair_factory: Any) -> None:
    holder = Holder()
    p = late_pair(pair_factory, holder)
    n = 10_000
    msgs = [BinMessage(HELD_ID, f"old-{i}".encode()) for i in range(n)]
    with pytest.raises(gofast.Timeout):
        p.client.request_many(msgs, timeout=0.5)
    wait_until(lambda: holder.count() == n, what="the server holding every request")
    assert p.client.stats()["n_timeouts"] == n
    # The whole range waits for late RESPONSEs: a new request fails at once.
    t0 = time.monotonic()
    with pytest.raises(gofast.OpaqueExhausted, match="timed-out"):
        p.client.request(BinMessage(HELD_ID, b"NEW-0"), timeout=5)
    assert time.monotonic() - t0 < 1.0
    before = p.client.stats()
    holder.answer_all()
    p.server.flush()
    wait_until(lambda: p.client.stats()["n_mdrops"] - before["n_mdrops"] == n, what="late drops")
    after = p.client.stats()
    assert after["n_rxreq"] == before["n_rxreq"], "a late RESPONSE was taken for a REQUEST"
    assert after["n_handler_errors"] == 0
    assert p.client._exchanges_in_use() == (0, 0)
    reply = p.client.request(BinMessage(HELD_ID, b"NEW-1"), timeout=5)
    assert reply.data == b"re: NEW-1"


def test_newer_requests_never_get_an_older_reply(pair_factory: Any) -> None:
    holder = Holder()
    p = late_pair(pair_factory, holder, **{"opaque.start": 10_000, "opaque.end": 10_003})
    for i in range(4):
        with pytest.raises(gofast.Timeout):
            p.client.request(BinMessage(HELD_ID, f"old-{i}".encode()), timeout=0.1)
    wait_until(lambda: holder.count() == 4, what="the server holding the requests")
    for i in range(10):
        with pytest.raises(gofast.OpaqueExhausted):
            p.client.request(BinMessage(HELD_ID, f"NEW-{i}".encode()), timeout=5)
    holder.answer_all()
    p.server.flush()
    wait_until(lambda: p.client._exchanges_in_use() == (0, 0), what="late RESPONSEs freeing")
    for i in range(10):
        reply = p.client.request(BinMessage(HELD_ID, f"NEW-{i}".encode()), timeout=5)
        assert reply.data == f"re: NEW-{i}".encode()
    assert p.client.stats()["n_mdrops"] == 4


def test_a_response_on_our_range_for_no_request_is_dropped(pair_factory: Any) -> None:
    """A stray `81` frame on our own opaques answers nothing we asked: it is
    dropped and counted, never handed to a handler as the peer's REQUEST."""
    import socket

    from wire import REQUEST, RawPeer

    with gofast.listen(("127.0.0.1", 0)) as lis:
        conn = socket.create_connection(lis.address, timeout=10)
        t = lis.accept(name="stray-target", timeout=10)
    try:
        t.default_handler(lambda s, m: pytest.fail(f"handler got {m}"))
        raw = RawPeer(conn)
        raw.handshake(t)
        start = t.settings["opaque.start"]
        for o in range(start, start + 5):
            raw.send_frame(REQUEST, o, 100, b"stray")
        assert raw.ping("after") == b"after"
        stats = t.stats()
        assert stats["n_mdrops"] == 5
        assert stats["n_handler_errors"] == 0
    finally:
        t.close()
        conn.close()
