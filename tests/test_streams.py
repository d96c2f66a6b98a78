"""Bi-directional STREAMs: opened by either side, closed by either side
first, callback and iteration modes, opaque reuse, many at once."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest

import gofast
from conftest import wait_until
from gofast import BinMessage

STREAM_ID = 500
DATA_ID = 501
RANGE_ID = 502


def released(*ts: gofast.Transport) -> None:
    """Waits until no exchange holds an opaque on any of ``ts``."""
    wait_until(
        lambda: all(t._exchanges_in_use() == (0, 0) for t in ts),
        what="exchanges released: " + ", ".join(str(t._exchanges_in_use()) for t in ts),
    )


def fence(a: gofast.Transport, b: gofast.Transport) -> None:
    """A round trip each way: every frame either side sent before has been
    handled by the other (each side's reader handles frames in order)."""
    assert a.ping("fence", timeout=5) == "fence"
    assert b.ping("fence", timeout=5) == "fence"


def seq(i: int) -> BinMessage:
    return BinMessage(DATA_ID, i.to_bytes(4, "big"))


def seqs(msgs: list[Any]) -> list[int]:
    return [int.from_bytes(m.data, "big") for m in msgs]


class Acceptor:
    """The accepting end of streams: records each stream and the messages
    its callback gets (``None`` last)."""

    def __init__(self, close_on_end: bool = False) -> None:
        self.streams: list[tuple[gofast.Stream, BinMessage]] = []
        self.got: dict[int, list[BinMessage | None]] = {}
        self.close_on_end = close_on_end
        self._cv = threading.Condition()

    def __call__(self, stream: gofast.Stream | None, msg: BinMessage) -> Any:
        assert stream is not None
        box: list[BinMessage | None] = []
        with self._cv:
            self.streams.append((stream, msg))
            self.got[stream.opaque] = box
            self._cv.notify_all()

        def on_msg(m: BinMessage | None) -> None:
            if m is None and self.close_on_end:
                stream.close()
            with self._cv:
                box.append(m)
                self._cv.notify_all()

        return on_msg

    def wait_streams(self, n: int, timeout: float = 10.0) -> list[tuple[gofast.Stream, BinMessage]]:
        with self._cv:
            assert self._cv.wait_for(lambda: len(self.streams) >= n, timeout), (
                f"{len(self.streams)} streams arrived, wanted {n}"
            )
            return list(self.streams)

    def wait_msgs(self, opaque: int, n: int, timeout: float = 10.0) -> list[BinMessage | None]:
        with self._cv:
            ok = self._cv.wait_for(lambda: len(self.got[opaque]) >= n, timeout)
            assert ok, f"stream {opaque}: {len(self.got[opaque])} messages, wanted {n}"
            return list(self.got[opaque])


def sides(p: Any, direction: str) -> tuple[gofast.Transport, gofast.Transport]:
    return (p.client, p.server) if direction == "client->server" else (p.server, p.client)


@pytest.mark.parametrize("direction", ["client->server", "server->client"])
@pytest.mark.parametrize("n", [0, 1, 10_000])
def test_stream_carries_every_message_in_order_then_one_none(
    pair_factory: Any, collector: Any, direction: str, n: int
) -> None:
    acc = Acceptor()
    p = pair_factory(
        server_setup=lambda t: t.subscribe(STREAM_ID, acc),
        client_setup=lambda t: t.subscribe(STREAM_ID, acc),
    )
    opener, acceptor = sides(p, direction)
    s = opener.stream(BinMessage(STREAM_ID, b"start"), collector.append)
    [(remote, first)] = acc.wait_streams(1)
    assert first == BinMessage(STREAM_ID, b"start")
    assert remote.opaque == s.opaque and not remote.is_request and not s.is_request

    for i in range(n):
        s.send(seq(i))
        remote.send(seq(i))
    s.close()
    remote.close()

    got_by_opener = collector.wait_for(n + 1, timeout=30)
    got_by_acceptor = acc.wait_msgs(s.opaque, n + 1, timeout=30)
    released(opener, acceptor)
    fence(opener, acceptor)
    for got in (collector.items, acc.got[s.opaque]):
        assert len(got) == n + 1, "messages after the end of the stream"
        assert got[-1] is None
        assert seqs(got[:-1]) == list(range(n))
    assert got_by_opener[-1] is None and got_by_acceptor[-1] is None

    # Closing the transports later does not end the finished stream again.
    p.close()
    assert len(collector.items) == n + 1 and len(acc.got[s.opaque]) == n + 1


def test_iterating_a_stream_without_callback(pair_factory: Any) -> None:
    def handler(stream: gofast.Stream | None, msg: BinMessage) -> Any:
        assert stream is not None
        for i in range(5):
            stream.send(seq(i))
        stream.close()
        return None

    p = pair_factory(server_setup=lambda t: t.subscribe(STREAM_ID, handler))
    with p.client.stream(BinMessage(STREAM_ID, b"")) as s:
        got = list(s)
    assert seqs(got) == [0, 1, 2, 3, 4]
    assert all(isinstance(m, BinMessage) for m in got)
    assert s.recv(timeout=1) is None  # ended: stays ended
    with pytest.raises(StopIteration):
        next(s)
    released(p.client, p.server)


def test_recv_times_out_when_nothing_arrives(pair_factory: Any) -> None:
    acc = Acceptor(close_on_end=True)
    p = pair_factory(server_setup=lambda t: t.subscribe(STREAM_ID, acc))
    s = p.client.stream(BinMessage(STREAM_ID, b""))
    [(remote, _)] = acc.wait_streams(1)
    with pytest.raises(gofast.Timeout):
        s.recv(timeout=0.05)
    remote.send(seq(7), flush=True)
    assert s.recv(timeout=5) == seq(7)
    s.close()
    assert s.recv(timeout=5) is None
    released(p.client, p.server)


def test_recv_needs_a_stream_without_callback(pair_factory: Any) -> None:
    p = pair_factory(server_setup=lambda t: t.subscribe(STREAM_ID, Acceptor(close_on_end=True)))
    s = p.client.stream(BinMessage(STREAM_ID, b""), lambda m: None)
    with pytest.raises(gofast.UsageError):
        s.recv(timeout=1)
    s.close()


def test_transport_messages_yields_until_the_peer_closes(pair_factory: Any) -> None:
    done = threading.Event()

    def handler(stream: gofast.Stream | None, msg: BinMessage) -> Any:
        assert stream is not None
        n = int.from_bytes(msg.data, "big")
        for i in range(n):
            stream.send(seq(i))
        stream.close()
        return lambda m: done.set() if m is None else None

    p = pair_factory(server_setup=lambda t: t.subscribe(STREAM_ID, handler))
    got = list(p.client.messages(BinMessage(STREAM_ID, (1000).to_bytes(4, "big"))))
    assert seqs(got) == list(range(1000))
    assert done.wait(5), "the server did not see our end of the stream"
    released(p.client, p.server)


def test_breaking_out_of_messages_closes_our_side(pair_factory: Any, collector: Any) -> None:
    def handler(stream: gofast.Stream | None, msg: BinMessage) -> Any:
        assert stream is not None
        for i in range(3):
            stream.send(seq(i))

        def on_msg(m: BinMessage | None) -> None:
            if m is None:
                stream.close()
            collector.append(m)

        return on_msg

    p = pair_factory(server_setup=lambda t: t.subscribe(STREAM_ID, handler))
    for m in p.client.messages(BinMessage(STREAM_ID, b"")):
        assert m == seq(0)
        break
    assert collector.wait_for(1) == [None], "the server did not see our end"
    released(p.client, p.server)


@pytest.mark.parametrize("direction", ["client->server", "server->client"])
def test_opener_closes_first_acceptor_may_still_send(
    pair_factory: Any, collector: Any, direction: str
) -> None:
    acc = Acceptor()
    p = pair_factory(
        server_setup=lambda t: t.subscribe(STREAM_ID, acc),
        client_setup=lambda t: t.subscribe(STREAM_ID, acc),
    )
    opener, acceptor = sides(p, direction)
    s = opener.stream(BinMessage(STREAM_ID, b""), collector.append)
    [(remote, _)] = acc.wait_streams(1)
    s.send(seq(0))
    s.close()
    assert acc.wait_msgs(s.opaque, 2) == [seq(0), None]
    with pytest.raises(gofast.StreamClosed):
        s.send(seq(9))
    assert opener._exchanges_in_use()[0] == 1, "opaque freed before the peer closed"
    for i in range(3):
        remote.send(seq(i))
    remote.close()
    assert collector.wait_for(4) == [seq(0), seq(1), seq(2), None]
    released(opener, acceptor)


@pytest.mark.parametrize("direction", ["client->server", "server->client"])
def test_acceptor_closes_first_opener_may_still_send(
    pair_factory: Any, collector: Any, direction: str
) -> None:
    acc = Acceptor()
    p = pair_factory(
        server_setup=lambda t: t.subscribe(STREAM_ID, acc),
        client_setup=lambda t: t.subscribe(STREAM_ID, acc),
    )
    opener, acceptor = sides(p, direction)
    s = opener.stream(BinMessage(STREAM_ID, b""), collector.append)
    [(remote, _)] = acc.wait_streams(1)
    remote.send(seq(0))
    remote.close()
    assert collector.wait_for(2) == [seq(0), None]
    with pytest.raises(gofast.StreamClosed):
        remote.send(seq(9))
    assert opener._exchanges_in_use()[0] == 1, "opaque freed before our own FINISH"
    s.send(seq(1))
    s.send(seq(2))
    s.close()
    assert acc.wait_msgs(s.opaque, 3) == [seq(1), seq(2), None]
    released(opener, acceptor)


def test_send_after_close_raises_and_close_twice_is_a_noop(pair_factory: Any) -> None:
    acc = Acceptor(close_on_end=True)
    p = pair_factory(server_setup=lambda t: t.subscribe(STREAM_ID, acc))
    s = p.client.stream(BinMessage(STREAM_ID, b""), lambda m: None)
    s.close()
    s.close()
    with pytest.raises(gofast.StreamClosed):
        s.send(seq(1))
    [(remote, _)] = acc.wait_streams(1)
    acc.wait_msgs(remote.opaque, 1)
    remote.close()  # already closed by its callback
    with pytest.raises(gofast.StreamClosed):
        remote.send(seq(1))
    released(p.client, p.server)
    s.close()  # after the stream is over, still a no-op
    with pytest.raises(gofast.StreamClosed):
        s.send(seq(1))
    fence(p.client, p.server)
    assert p.client.stats()["n_txfin"] == 1
    assert p.server.stats()["n_rxfin"] == 1 and p.server.stats()["n_txfin"] == 1


def test_stream_opaques_are_released_after_many_streams(pair_factory: Any) -> None:
    acc = Acceptor(close_on_end=True)
    # Only four opaques: a leak would exhaust the range within a few streams.
    p = pair_factory(
        client_settings={"opaque.start": 10_000, "opaque.end": 10_003},
        server_setup=lambda t: t.subscribe(STREAM_ID, acc),
    )
    for i in range(500):
        ended = threading.Event()
        s = p.client.stream(
            BinMessage(STREAM_ID, b""), lambda m, e=ended: e.set() if m is None else None
        )
        s.send(seq(i))
        s.close()
        assert ended.wait(5), f"stream {i} did not end"
    released(p.client, p.server)
    assert {st.opaque for st, _ in acc.streams} <= set(range(10_000, 10_004))
    assert len(acc.streams) == 500


def test_opaque_is_reused_only_after_both_sides_closed(pair_factory: Any, collector: Any) -> None:
    acc = Acceptor()
    p = pair_factory(
        client_settings={"opaque.start": 10_000, "opaque.end": 10_000},
        server_setup=lambda t: t.subscribe(STREAM_ID, acc),
    )
    s = p.client.stream(BinMessage(STREAM_ID, b""), collector.append)
    [(remote, _)] = acc.wait_streams(1)

    remote.close()  # the peer is done, we are not
    assert collector.wait_for(1) == [None]
    with pytest.raises(gofast.OpaqueExhausted):
        p.client.stream(BinMessage(STREAM_ID, b""), collector.append)
    with pytest.raises(gofast.OpaqueExhausted):
        p.client.request(BinMessage(STREAM_ID, b""), timeout=1)

    s.close()
    s2 = p.client.stream(BinMessage(STREAM_ID, b""), collector.append)
    assert s2.opaque == s.opaque == 10_000
    [_, (remote2, _)] = acc.wait_streams(2)

    s2.close()  # now we are done, the peer is not
    assert acc.wait_msgs(s2.opaque, 1) == [None]
    with pytest.raises(gofast.OpaqueExhausted):
        p.client.stream(BinMessage(STREAM_ID, b""), collector.append)
    remote2.close()
    assert collector.wait_for(2) == [None, None]
    released(p.client, p.server)


def test_many_concurrent_streams(pair_factory: Any) -> None:
    n_streams, n_msgs = 200, 20

    def echo_stream(stream: gofast.Stream | None, msg: BinMessage) -> Any:
        assert stream is not None

        def on_msg(m: BinMessage | None) -> None:
            if m is None:
                stream.close()
            else:
                stream.send(m)

        return on_msg

    p = pair_factory(server_setup=lambda t: t.subscribe(STREAM_ID, echo_stream))
    boxes: list[list[BinMessage | None]] = [[] for _ in range(n_streams)]
    cv = threading.Condition()

    def callback(k: int) -> Callable[[BinMessage | None], None]:
        def cb(m: BinMessage | None) -> None:
            with cv:
                boxes[k].append(m)
                cv.notify_all()

        return cb

    streams = [p.client.stream(BinMessage(STREAM_ID, b""), callback(k)) for k in range(n_streams)]
    assert p.client._exchanges_in_use()[0] == n_streams
    wait_until(lambda: p.server._exchanges_in_use()[1] == n_streams, what="all streams accepted")
    for i in range(n_msgs):
        for k, s in enumerate(streams):
            s.send(BinMessage(DATA_ID, f"{k}:{i}".encode()))
    for s in streams:
        s.close()
    with cv:
        ok = cv.wait_for(lambda: all(len(b) == n_msgs + 1 for b in boxes), 30)
        assert ok, f"{sum(len(b) for b in boxes)} of {n_streams * (n_msgs + 1)} callbacks"
    for k, box in enumerate(boxes):
        assert box[-1] is None
        assert [m.data for m in box[:-1] if m is not None] == [
            f"{k}:{i}".encode() for i in range(n_msgs)
        ]
    released(p.client, p.server)


def test_stream_handler_returning_a_non_callable_is_reported_and_ends_the_stream(
    pair_factory: Any, collector: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="gofast")
    p = pair_factory(server_setup=lambda t: t.subscribe(STREAM_ID, lambda s, m: 42))
    s = p.client.stream(BinMessage(STREAM_ID, b""), collector.append)
    assert collector.wait_for(1) == [None], "the stream did not end"
    assert p.server.stats()["n_handler_errors"] == 1
    assert any(r.exc_info and r.exc_info[0] is TypeError for r in caplog.records)
    s.close()
    released(p.client, p.server)


def test_stream_handler_raising_ends_the_stream(pair_factory: Any, collector: Any) -> None:
    def boom(stream: gofast.Stream | None, msg: BinMessage) -> Any:
        raise RuntimeError("cannot stream")

    p = pair_factory(server_setup=lambda t: t.subscribe(STREAM_ID, boom))
    s = p.client.stream(BinMessage(STREAM_ID, b""), collector.append)
    assert collector.wait_for(1) == [None]
    assert p.server.stats()["n_handler_errors"] == 1
    s.close()
    released(p.client, p.server)


def test_stream_to_an_id_without_handler_ends_and_releases_the_opaque(
    pair_factory: Any, collector: Any
) -> None:
    p = pair_factory()
    s = p.client.stream(BinMessage(STREAM_ID, b""), collector.append)
    assert collector.wait_for(1) == [None], "the callback sees only the end"
    # ... and stream.error why, under x-errors (on by default).
    assert isinstance(s.error, gofast.RemoteError) and s.error.remote_type == "NoHandler"
    s.send(seq(1), flush=True)  # our side is still open; the peer drops it
    s.close()
    released(p.client, p.server)
    fence(p.client, p.server)
    assert p.server.stats()["n_mdrops"] == 2  # the start and the message


def test_stream_handler_returning_none_keeps_the_stream_for_sending(
    pair_factory: Any, collector: Any
) -> None:
    def handler(stream: gofast.Stream | None, msg: BinMessage) -> None:
        assert stream is not None
        stream.send(seq(1))
        stream.close()

    p = pair_factory(server_setup=lambda t: t.subscribe(STREAM_ID, handler))
    s = p.client.stream(BinMessage(STREAM_ID, b""), collector.append)
    assert collector.wait_for(2) == [seq(1), None]
    s.close()
    released(p.client, p.server)


def test_range_query_closed_by_the_client_after_100_entries(pair_factory: Any) -> None:
    """The getting-started guide's example: the remote streams a range from a
    worker thread until the client closes; it stops on its None callback."""
    db = list(range(100_000))
    server_state: dict[str, Any] = {}
    worker_done = threading.Event()
    remote_saw_end = threading.Event()

    def range_query(stream: gofast.Stream | None, msg: BinMessage) -> Any:
        assert stream is not None
        remote_closed = threading.Event()

        def work() -> None:
            sent = 0
            try:
                start = int.from_bytes(msg.data, "big")
                for entry in db[start:]:
                    if remote_closed.is_set():
                        break
                    stream.send(BinMessage(DATA_ID, entry.to_bytes(4, "big")), flush=True)
                    sent += 1
                stream.close()
            finally:
                server_state["sent"] = sent
                worker_done.set()

        threading.Thread(target=work, daemon=True).start()

        def on_msg(m: BinMessage | None) -> None:
            if m is None:
                remote_closed.set()
                remote_saw_end.set()

        return on_msg

    p = pair_factory(server_setup=lambda t: t.subscribe(RANGE_ID, range_query))

    entries: list[int] = []
    ended = threading.Event()
    lock = threading.Lock()
    holder: list[gofast.Stream] = []

    def on_entry(m: BinMessage | None) -> None:
        if m is None:
            ended.set()  # the remote has closed the stream
            return
        with lock:
            entries.append(int.from_bytes(m.data, "big"))
            if len(entries) >= 100 and holder:
                holder[0].close()

    s = p.client.stream(BinMessage(RANGE_ID, (10).to_bytes(4, "big")), on_entry)
    with lock:
        holder.append(s)
        if len(entries) >= 100:
            s.close()

    assert remote_saw_end.wait(10), "the server did not see the client close"
    assert worker_done.wait(10), "the server's worker did not stop"
    assert ended.wait(10), "the server did not close its side"
    with lock:
        assert len(entries) >= 100
        assert entries == list(range(10, 10 + len(entries)))
    assert server_state["sent"] < len(db) - 10, "the worker streamed the whole range"
    released(p.client, p.server)
