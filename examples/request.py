"""Requesting a response from the remote node (getting started: "To request
a response from remote").

For every REQUEST the remote's handler sends exactly one response, through
the stream it is handed (``stream.respond``); ``request()`` waits for it and
decodes it with the response type given. This example starts a server on
127.0.0.1 in a thread that keeps a small document store, and a client that
fetches three documents (one is missing); then the server asks the client
a question (either node can request), and a request the server answers
too late shows a timeout. It prints::

    doc-1: found, 'the first document'
    doc-2: found, 'the second document'
    doc-9: not found
    either node can request: server asked the client for its name: example-client
    slow request timed out after 0.2 s: Timeout
    client: 1 timeout, 1 late response dropped

(and the gofast logger warns, on stderr, about the dropped late response).

Run it with ``python examples/request.py``.
"""

from __future__ import annotations

import argparse
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import gofast


@dataclass
class MsgGetDocument(gofast.CborMessage, id=200):
    """Asks for the document stored under ``key``."""

    key: str


@dataclass
class ResponseDocument(gofast.CborMessage, id=201):
    """The answer to a MsgGetDocument."""

    key: str
    found: bool
    body: str = ""


@dataclass
class MsgWhoAreYou(gofast.CborMessage, id=202):
    """The server's question to the client (and the client's answer)."""

    name: str = ""


@dataclass
class MsgSlow(gofast.CborMessage, id=203):
    """A request the server answers late, to show a timeout."""


DOCUMENTS = {"doc-1": "the first document", "doc-2": "the second document"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    slow_requests: list[gofast.Stream] = []
    slow_arrived = threading.Event()

    def on_get(stream: gofast.Stream | None, msg: gofast.BinMessage) -> None:
        assert stream is not None  # a REQUEST always comes with its stream
        query = msg.decode(MsgGetDocument)
        body = DOCUMENTS.get(query.key)
        stream.respond(ResponseDocument(query.key, body is not None, body or ""))

    def on_slow(stream: gofast.Stream | None, msg: gofast.BinMessage) -> None:
        assert stream is not None
        slow_requests.append(stream)  # answered later, after the caller gave up
        slow_arrived.set()

    def on_who(stream: gofast.Stream | None, msg: gofast.BinMessage) -> None:
        assert stream is not None
        stream.respond(MsgWhoAreYou("example-client"))

    with gofast.listen(("127.0.0.1", 0)) as listener, ThreadPoolExecutor(1) as pool:

        def serve() -> gofast.Transport:
            # on_slow answers later, from another thread: that needs the
            # x-errors extension off on this side, as under it (the default)
            # a handler returning without a reply fails its request at once.
            server = listener.accept(
                name="example-server", settings={"errors.extension": False}, timeout=10
            )
            server.subscribe(MsgGetDocument, on_get)
            server.subscribe(MsgSlow, on_slow)
            server.handshake()
            return server

        accepted = pool.submit(serve)
        with gofast.Transport.connect(listener.address, name="example-client") as client:
            client.subscribe(MsgWhoAreYou, on_who)
            client.handshake()
            with accepted.result(timeout=10) as server:
                for key in ("doc-1", "doc-2", "doc-9"):
                    doc = client.request(MsgGetDocument(key), ResponseDocument, timeout=5)
                    print(f"{doc.key}: found, {doc.body!r}" if doc.found else f"{key}: not found")

                who = server.request(MsgWhoAreYou(), MsgWhoAreYou, timeout=5)
                print(f"either node can request: server asked the client for its name: {who.name}")

                try:
                    client.request(MsgSlow(), timeout=0.2)
                except gofast.Timeout as e:
                    print(f"slow request timed out after 0.2 s: {type(e).__name__}")
                slow_arrived.wait(5)
                for stream in slow_requests:
                    stream.respond(MsgSlow())  # too late: the client drops it

                # A round trip after the late answer: it has been dropped by now.
                client.ping("sync", timeout=5)
                stats = client.stats()
                print(
                    f"client: {stats['n_timeouts']} timeout, "
                    f"{stats['n_mdrops']} late response dropped"
                )


if __name__ == "__main__":
    main()
