"""Posting messages to the remote node (getting started: "To post a message
to remote").

A POST is one-way: the remote's handler gets the message and nothing comes
back. This example starts a server on 127.0.0.1 in a thread, connects a
client, posts documents from the client (and one from the server, since
either node can post), waits until every one has arrived and prints::

    client posted 1000 documents, server received 1000
    last document: doc-999 (15 bytes of body)
    server posted 1 greeting, client received: hello from the server

Run it with ``python examples/post.py [--count N]``.
"""

from __future__ import annotations

import argparse
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import gofast


@dataclass
class MsgPostDocument(gofast.CborMessage, id=100):
    """A document the client posts; its id routes it to the server's handler."""

    key: str
    body: str


@dataclass
class MsgGreeting(gofast.CborMessage, id=101):
    """A message the server posts back."""

    text: str


class Inbox:
    """What a handler received, and a way to wait until ``count`` arrived."""

    def __init__(self, count: int) -> None:
        self.docs: list[MsgPostDocument] = []
        self.count = count
        self.complete = threading.Event()

    def on_post(self, stream: gofast.Stream | None, msg: gofast.BinMessage) -> None:
        # Handlers run on the transport's reader thread: keep them short.
        assert stream is None  # a POST has no stream: nothing to answer
        self.docs.append(msg.decode(MsgPostDocument))
        if len(self.docs) == self.count:
            self.complete.set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="documents to post")
    args = parser.parse_args()
    count: int = args.count
    if count < 1:
        parser.error("--count must be at least 1")

    inbox = Inbox(count)
    greetings: list[str] = []
    greeted = threading.Event()

    def on_greeting(stream: gofast.Stream | None, msg: gofast.BinMessage) -> None:
        greetings.append(msg.decode(MsgGreeting).text)
        greeted.set()

    with gofast.listen(("127.0.0.1", 0)) as listener, ThreadPoolExecutor(1) as pool:

        def serve() -> gofast.Transport:
            server = listener.accept(name="example-server", timeout=10)
            server.flush_period(0.005)  # batched frames wait at most 5 ms
            server.send_heartbeat(1.0)
            server.subscribe(MsgPostDocument, inbox.on_post)  # before the handshake
            server.handshake()
            return server

        accepted = pool.submit(serve)
        with gofast.Transport.connect(listener.address, name="example-client") as client:
            client.subscribe(MsgGreeting, on_greeting)
            client.handshake()
            with accepted.result(timeout=10) as server:
                for i in range(count):
                    # flush=False lets posts share system calls; the flush
                    # period (or a full batch) sends them.
                    client.post(MsgPostDocument(f"doc-{i}", f"body of doc {i}"), flush=False)
                client.flush()
                server.post(MsgGreeting("hello from the server"), flush=True)

                if not inbox.complete.wait(30) or not greeted.wait(30):
                    raise SystemExit("timed out waiting for the posts")

    last = inbox.docs[-1]
    print(f"client posted {count} documents, server received {len(inbox.docs)}")
    print(f"last document: {last.key} ({len(last.body)} bytes of body)")
    print(f"server posted 1 greeting, client received: {greetings[0]}")


if __name__ == "__main__":
    main()
