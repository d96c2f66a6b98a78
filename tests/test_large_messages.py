"""Large messages: from 16 KiB the writer sends a message's ``bytes`` from
where they lie (holding a reference) instead of copying them into its queue.
What users rely on: the bytes arrive exactly and in order with the small
messages around them, through every way of sending, compressed or not, and
the writer lets go of the sender's objects once they are sent."""

from __future__ import annotations

import hashlib
import sys
import threading
import time
from typing import Any

import pytest

import gofast
import wire
from conftest import wait_until
from gofast import BinMessage

DATA_ID = 600
ECHO_ID = 601
STREAM_ID = 602
LEND_MIN = 16 * 1024

# Around the lending threshold, well past it, and larger than the queue.
SIZES = [LEND_MIN - 1, LEND_MIN, 5, 65_536, 0, 1_100_000, 300_000, 17]


def payload(i: int, size: int) -> bytes:
    """Distinct content per message, so a swap or a shift shows."""
    block = hashlib.sha256(i.to_bytes(4, "big")).digest()
    return (block * (size // len(block) + 1))[:size]


class Inbox:
    """Collects the POSTs of DATA_ID in arrival order."""

    def __init__(self) -> None:
        self.got: list[bytes] = []
        self._cv = threading.Condition()

    def __call__(self, _stream: Any, msg: BinMessage) -> None:
        with self._cv:
            self.got.append(msg.data)
            self._cv.notify_all()

    def wait_for(self, n: int) -> list[bytes]:
        with self._cv:
            assert self._cv.wait_for(lambda: len(self.got) >= n, timeout=30), len(self.got)
            return list(self.got)


@pytest.mark.parametrize("tags", ["", "gzip"])
def test_posts_of_every_size_arrive_exactly_and_in_order(pair_factory: Any, tags: str) -> None:
    inbox = Inbox()
    pair = pair_factory(
        server_setup=lambda t: t.subscribe(DATA_ID, inbox),
        server_settings={"tags": tags},
    )
    want = [payload(i, SIZES[i % len(SIZES)]) for i in range(3 * len(SIZES))]
    for data in want:
        # The message object, and the bytes with it, may go right away.
        pair.client.post(BinMessage(DATA_ID, data[:]))
    pair.client.flush()
    assert inbox.wait_for(len(want)) == want


class Blob(bytes):
    """A bytes subclass (copied, not lent) that notes its own deletion."""

    deleted = 0

    def __del__(self) -> None:
        Blob.deleted += 1


class BlobMessage:
    ID = DATA_ID

    def __init__(self, data: bytes) -> None:
        self.data = data

    def encode(self) -> bytes:
        return Blob(self.data)


def test_large_bytes_subclasses_arrive_too(pair_factory: Any) -> None:
    inbox = Inbox()
    pair = pair_factory(server_setup=lambda t: t.subscribe(DATA_ID, inbox))
    want = [payload(i, 70_000) for i in range(5)]
    Blob.deleted = 0
    for i, data in enumerate(want):
        pair.client.post(BlobMessage(data))
        # Copied, so nothing holds it once post() returns; the writer drops
        # references only on its own thread, where __del__ must not run.
        assert Blob.deleted == i + 1
    pair.client.flush()
    assert inbox.wait_for(len(want)) == want


def test_post_many_mixes_lent_and_copied(pair_factory: Any) -> None:
    inbox = Inbox()
    pair = pair_factory(server_setup=lambda t: t.subscribe(DATA_ID, inbox))
    want = [payload(i, SIZES[i % len(SIZES)]) for i in range(2 * len(SIZES))]
    assert pair.client.post_many([BinMessage(DATA_ID, d) for d in want]) == len(want)
    assert inbox.wait_for(len(want)) == want


def test_large_requests_responses_and_streams(pair_factory: Any) -> None:
    """REQUEST data (copied: sent without the GIL), RESPONSEs from a handler,
    and STREAM messages both ways, each large."""
    got_on_stream: list[bytes | None] = []
    ended = threading.Event()

    def on_echo(stream: Any, msg: BinMessage) -> None:
        stream.respond(BinMessage(ECHO_ID, msg.data[::-1]))

    def on_stream(stream: Any, msg: BinMessage) -> Any:
        def pump() -> None:
            for i in range(4):
                stream.send(BinMessage(STREAM_ID, payload(100 + i, 200_000)))
            stream.close()

        threading.Thread(target=pump).start()
        return lambda m: got_on_stream.append(None if m is None else m.data)

    def server_setup(t: gofast.Transport) -> None:
        t.subscribe(ECHO_ID, on_echo)
        t.subscribe(STREAM_ID, on_stream)

    pair = pair_factory(server_setup=server_setup)
    for i, size in enumerate([LEND_MIN, 500_000]):
        data = payload(i, size)
        assert pair.client.request(BinMessage(ECHO_ID, data), timeout=10).data == data[::-1]

    from_server: list[bytes] = []

    def on_msg(m: BinMessage | None) -> None:
        if m is None:
            ended.set()
        else:
            from_server.append(m.data)

    stream = pair.client.stream(BinMessage(STREAM_ID, payload(7, 70_000)), on_msg)
    for i in range(3):
        stream.send(BinMessage(STREAM_ID, payload(200 + i, 90_000)))
    stream.close()
    assert ended.wait(30)
    assert from_server == [payload(100 + i, 200_000) for i in range(4)]
    wait_until(lambda: len(got_on_stream) == 4, what="the client's stream messages")
    assert got_on_stream == [payload(200 + i, 90_000) for i in range(3)] + [None]


def test_the_writer_lets_go_of_sent_bytes(pair_factory: Any) -> None:
    inbox = Inbox()
    pair = pair_factory(server_setup=lambda t: t.subscribe(DATA_ID, inbox))
    data = payload(1, 100_000)
    msg = BinMessage(DATA_ID, data)
    before = sys.getrefcount(data)
    for _ in range(50):
        pair.client.post(msg)
    pair.client.flush()
    assert len(inbox.wait_for(50)) == 50
    # References dropped on the writer thread are released the next time
    # any thread enters the extension (here: stats()).
    wait_until(
        lambda: pair.client.stats()["n_flushes"] >= 0 and sys.getrefcount(data) == before,
        what=f"references released ({sys.getrefcount(data)} != {before})",
    )


def test_closing_lets_go_of_large_messages_never_sent() -> None:
    """A peer that reads nothing: once the socket is full, lent messages wait
    in the queue; closing fails the blocked sender and drops them."""
    with wire.raw_server({"pending.max": 1 << 20}) as (_raw, transport):
        data = payload(3, 100_000)
        msg = BinMessage(DATA_ID, data)
        before = sys.getrefcount(data)
        posted = [0]
        failed: list[BaseException] = []

        def poster() -> None:
            try:
                while True:
                    transport.post(msg)
                    posted[0] += 1
            except gofast.ConnectionClosed as e:
                failed.append(e)

        def stalled() -> bool:
            """Nothing more reaches the socket and several are queued, lent."""
            sent = transport.stats()["n_txbyte"]
            time.sleep(0.05)
            return transport.stats()["n_txbyte"] == sent and sys.getrefcount(data) > before + 5

        thread = threading.Thread(target=poster)
        thread.start()
        wait_until(stalled, what="the socket full and large messages queued")
        transport.close()  # lingers, then gives up on the queue
        thread.join(timeout=10)
        assert not thread.is_alive() and len(failed) == 1
        assert transport.stats()["n_txbyte"] < posted[0] * len(data), "all were sent"
        wait_until(
            lambda: gofast.stats() is not None and sys.getrefcount(data) == before,
            what=f"references released ({sys.getrefcount(data)} != {before})",
        )
