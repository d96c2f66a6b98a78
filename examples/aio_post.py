"""Posting messages with asyncio (getting started: "To post a message to
remote", as examples/post.py, with gofast.aio).

A POST is one-way: the remote's handler gets the message and nothing comes
back. This example serves on 127.0.0.1 with a ``gofast.aio.Server``,
connects a client on the same loop, posts documents from the client (and
one from the server, since either node can post: an ``on_connect`` hook
greets each client), waits until every one has arrived and prints::

    client posted 1000 documents, server received 1000
    last document: doc-999 (15 bytes of body)
    server posted 1 greeting, client received: hello from the server

Run it with ``python examples/aio_post.py [--count N]``.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass

import gofast
import gofast.aio


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
    """What a handler received, and an event set once ``count`` arrived."""

    def __init__(self, count: int) -> None:
        self.docs: list[MsgPostDocument] = []
        self.count = count
        self.complete = asyncio.Event()

    def on_post(self, stream: object, msg: gofast.BinMessage) -> None:
        # Handlers run on the loop: keep them short, or make them async def.
        assert stream is None  # a POST has no stream: nothing to answer
        self.docs.append(msg.decode(MsgPostDocument))
        if len(self.docs) == self.count:
            self.complete.set()


async def main(count: int) -> None:
    inbox = Inbox(count)
    greetings: list[str] = []
    greeted = asyncio.Event()

    def on_greeting(stream: object, msg: gofast.BinMessage) -> None:
        greetings.append(msg.decode(MsgGreeting).text)
        greeted.set()

    async def greet(t: gofast.aio.Transport) -> None:
        await t.post(MsgGreeting("hello from the server"), flush=True)

    server = gofast.aio.Server(("127.0.0.1", 0), name="example-server", on_connect=greet)
    server.subscribe(MsgPostDocument, inbox.on_post)
    async with server:
        async with await gofast.aio.connect(server.address, name="example-client") as client:
            client.subscribe(MsgGreeting, on_greeting)  # before the handshake
            await client.handshake()
            for i in range(count):
                # Ready at once while the send queue has room; flush=False
                # lets posts share system calls (a full batch or the flush
                # period sends them).
                await client.post(MsgPostDocument(f"doc-{i}", f"body of doc {i}"))
            client.flush()
            async with asyncio.timeout(30):
                await inbox.complete.wait()
                await greeted.wait()

    last = inbox.docs[-1]
    print(f"client posted {count} documents, server received {len(inbox.docs)}")
    print(f"last document: {last.key} ({len(last.body)} bytes of body)")
    print(f"server posted 1 greeting, client received: {greetings[0]}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="documents to post")
    args = parser.parse_args()
    if args.count < 1:
        parser.error("--count must be at least 1")
    asyncio.run(main(args.count))
