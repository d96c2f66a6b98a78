"""A typed tour of the public API: every call once, checked by mypy --strict.

``request(msg, Reply)`` returns a ``Reply`` and ``msg.decode(Query)`` a
``Query`` (``assert_type`` below fails the type check if not); without a
response type, ``request(msg)`` returns the ``BinMessage`` as it came. A
server and a client on 127.0.0.1 post, request, stream, ping and read their
stats. It prints::

    gofast 0.1.0: tour-client shook hands with tour-server (version 1)
    posted 1 greeting and 3 notes; the server got 3 notes in 1+ batch(es)
    request: Greeting(text='re: hello'); as it came: BinMessage(id=100, ...)
    request_many: ['re: a', 're: b']
    stream: 3 rows by recv(), 3 by iteration, 3 by messages()
    ping 'echo'; whoami tour-server; 1 unsubscribed post to the default handler
    stats: 5 posts, 3 streams; 2 live transports, served over HTTP
    a response of another type: ProtocolError

Run it with ``python examples/typed_tour.py``.
"""

from __future__ import annotations

import argparse
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import assert_type

import gofast

TIMEOUT = 10.0


@dataclass
class Greeting(gofast.CborMessage, id=100):
    """Posted, or requested (the answer is a Greeting too)."""

    text: str


@dataclass
class Note(gofast.CborMessage, id=101):
    """Posted many at once; the server takes them in batches."""

    n: int


@dataclass
class RangeQuery(gofast.CborMessage, id=102):
    """Opens a stream of ``Row``s in ``[lo, hi)``."""

    lo: int
    hi: int


@dataclass
class Row(gofast.CborMessage, id=103):
    """One entry of a range."""

    value: int


@dataclass
class Unsubscribed(gofast.CborMessage, id=104):
    """Has no handler of its own: the default handler gets it."""


class Server:
    """What the server side counts, and its handlers."""

    def __init__(self) -> None:
        self.notes: list[int] = []
        self.batches = 0
        self.defaults = 0
        self.got_notes = threading.Event()
        self.got_default = threading.Event()

    def on_greeting(
        self, stream: gofast.Stream | None, msg: gofast.BinMessage
    ) -> gofast.StreamCallback | None:
        greeting = msg.decode(Greeting)
        assert_type(greeting, Greeting)
        if stream is None:  # a POST
            return None
        if greeting.text == "a row, please":  # answered with another type
            stream.respond(Row(0))
        else:
            stream.respond(Greeting("re: " + greeting.text))
        return None

    def on_notes(self, msgs: list[gofast.BinMessage]) -> None:
        self.batches += 1
        self.notes.extend(m.decode(Note).n for m in msgs)
        if len(self.notes) == 3:
            self.got_notes.set()

    def on_range(
        self, stream: gofast.Stream | None, msg: gofast.BinMessage
    ) -> gofast.StreamCallback | None:
        assert stream is not None  # a STREAM-START comes with its stream
        query = msg.decode(RangeQuery)
        for value in range(query.lo, query.hi):
            stream.send(Row(value))
        stream.close()  # our side is done; the callback sees the peer's end
        return lambda m: None

    def on_other(
        self, stream: gofast.Stream | None, msg: gofast.BinMessage
    ) -> gofast.StreamCallback | None:
        self.defaults += 1
        self.got_default.set()
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    state = Server()
    with gofast.listen(("127.0.0.1", 0)) as listener, ThreadPoolExecutor(1) as pool:
        accepted = pool.submit(listener.accept, name="tour-server", timeout=TIMEOUT)
        client = gofast.Transport.connect(listener.address, name="tour-client")
        server = accepted.result(timeout=TIMEOUT)
        server.subscribe(Greeting, state.on_greeting).subscribe(RangeQuery, state.on_range)
        server.subscribe_batch(Note, state.on_notes).default_handler(state.on_other)
        with server, client:
            server_shook = pool.submit(server.handshake, TIMEOUT)
            peer = client.handshake(TIMEOUT)
            server_shook.result(timeout=TIMEOUT)
            assert client.peer == peer and client.peer_version is not None
            print(
                f"gofast {gofast.__version__}: {client.name} shook hands with {peer.name} "
                f"(version {client.peer_version.value})"
            )
            tour(client, server, state)


def tour(client: gofast.Transport, server: gofast.Transport, state: Server) -> None:
    client.post(Greeting("fire and forget"), flush=True)
    client.post_many([Note(1), Note(2), Note(3)])
    assert state.got_notes.wait(TIMEOUT), "the notes did not arrive"
    print("posted 1 greeting and 3 notes; the server got 3 notes in 1+ batch(es)")

    reply = client.request(Greeting("hello"), Greeting, timeout=TIMEOUT)
    assert_type(reply, Greeting)
    raw = client.request(Greeting("hi"), timeout=TIMEOUT)
    assert_type(raw, gofast.BinMessage)
    assert raw.decode(Greeting) == Greeting("re: hi")
    print(f"request: {reply}; as it came: BinMessage(id={raw.id}, ...)")

    replies = client.request_many([Greeting("a"), Greeting("b")], Greeting, timeout=TIMEOUT)
    assert_type(replies, list[Greeting])
    print(f"request_many: {[r.text for r in replies]}")

    by_recv = read_stream(client.stream(RangeQuery(0, 3)))
    with client.stream(RangeQuery(0, 3)) as stream:
        by_iteration = [m.decode(Row).value for m in stream]
        assert stream.error is None  # ended by the peer's close, not by the connection
    by_messages = [m.decode(Row).value for m in client.messages(RangeQuery(0, 3))]
    assert by_recv == by_iteration == by_messages == [0, 1, 2]
    print("stream: 3 rows by recv(), 3 by iteration, 3 by messages()")

    echoed = client.ping("echo", timeout=TIMEOUT)
    who = client.whoami(TIMEOUT)
    client.post(Unsubscribed())
    client.flush()
    assert state.got_default.wait(TIMEOUT), "the default handler was not called"
    print(
        f"ping {echoed!r}; whoami {who.name}; "
        f"{state.defaults} unsubscribed post to the default handler"
    )

    client.flush_period(0.01)  # batch writes for 10 ms
    client.send_heartbeat(1.0)  # and tell the peer we are alive every second
    since = client.silent_since()  # seconds since the peer's last heartbeat
    assert since is None  # the server sends none
    show_stats(client, server)

    try:
        client.request(Greeting("a row, please"), Greeting, timeout=TIMEOUT)
    except gofast.ProtocolError as e:  # refused rather than decoded as a Greeting
        print(f"a response of another type: {type(e).__name__}")


def read_stream(stream: gofast.Stream) -> list[int]:
    """Reads a stream with ``recv()`` until the peer closes its side."""
    values = []
    while (msg := stream.recv(timeout=TIMEOUT)) is not None:
        values.append(msg.decode(Row).value)
    stream.close()
    return values


def show_stats(client: gofast.Transport, server: gofast.Transport) -> None:
    mine = client.stats()
    live = [n for n in gofast.transport_names() if n in (client.name, server.name)]
    with gofast.serve_stats(("127.0.0.1", 0)) as stats_server:
        with urllib.request.urlopen(stats_server.url + "/gofast/statistics", timeout=TIMEOUT) as r:
            assert r.status == 200
    total = gofast.stats()
    assert total["n_tx"] >= mine["n_tx"]
    print(
        f"stats: {mine['n_txpost']} posts, {mine['n_txstart']} streams; "
        f"{len(live)} live transports, served over HTTP"
    )


if __name__ == "__main__":
    main()
