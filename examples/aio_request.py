"""Getting started with asyncio: post, request and stream with gofast.aio.

The same messages as the sync examples, from one asyncio program: a
``gofast.aio.Server`` keeps a small document store; a client posts notes,
requests documents (one missing), asks the server for something it
answers after awaiting, gives up a request with ``asyncio.timeout`` and
reads a range from a stream the server's async generator fills. It prints::

    posted 100 notes, the server received 100
    doc-1: found, 'the first document'
    doc-9: not found
    slow lookup, answered after an await: 'computed: 42'
    gave up a request after 0.1 s (asyncio.timeout): its late response is dropped
    range [10, 15): [10, 11, 12, 13, 14]
    client: 2 timeouts (incl. 1 cancelled), server: 1 client served

Run it with ``python examples/aio_request.py`` (``--uvloop`` runs it on uvloop).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import gofast
import gofast.aio


@dataclass
class Note(gofast.CborMessage, id=210):
    text: str


@dataclass
class GetDocument(gofast.CborMessage, id=211):
    key: str


@dataclass
class Document(gofast.CborMessage, id=212):
    key: str
    found: bool
    body: str = ""


@dataclass
class Compute(gofast.CborMessage, id=213):
    delay: float


@dataclass
class Range(gofast.CborMessage, id=214):
    start: int
    end: int


@dataclass
class Item(gofast.CborMessage, id=215):
    value: int


DOCUMENTS = {"doc-1": "the first document"}


async def main() -> None:
    notes: list[str] = []

    def on_note(stream: object, msg: gofast.BinMessage) -> None:
        notes.append(msg.decode(Note).text)  # runs on this loop

    def on_get(stream: object, msg: gofast.BinMessage) -> Document:
        key = msg.decode(GetDocument).key
        body = DOCUMENTS.get(key)
        return Document(key, body is not None, body or "")  # the reply

    async def on_compute(stream: object, msg: gofast.BinMessage) -> Document:
        await asyncio.sleep(msg.decode(Compute).delay)  # awaits before answering
        return Document("computed", True, "computed: 42")

    async def on_range(stream: object, msg: gofast.BinMessage) -> AsyncIterator[Item]:
        r = msg.decode(Range)
        for v in range(r.start, r.end):
            yield Item(v)  # each yield is a message on the stream

    server = gofast.aio.Server(("127.0.0.1", 0), name="aio-server")
    server.subscribe(Note, on_note).subscribe(GetDocument, on_get)
    server.subscribe(Compute, on_compute).subscribe(Range, on_range)
    async with server:
        async with await gofast.aio.connect(server.address, name="aio-client") as t:
            await t.handshake()
            for i in range(100):
                await t.post(Note(f"note {i}"))
            t.flush()
            # The server's loop runs its handlers in the order things came:
            # once a request is answered, the notes before it were handled.
            # (Not so a ping: the core answers it without the loop.)
            docs = [
                await t.request(GetDocument(k), Document, timeout=5) for k in ("doc-1", "doc-9")
            ]
            print(f"posted 100 notes, the server received {len(notes)}")
            for doc in docs:
                print(f"{doc.key}: found, {doc.body!r}" if doc.found else f"{doc.key}: not found")
            doc = await t.request(Compute(0.01), Document)
            print(f"slow lookup, answered after an await: {doc.body!r}")
            try:
                async with asyncio.timeout(0.1):
                    await t.request(Compute(0.5), Document)
            except TimeoutError:
                print(
                    "gave up a request after 0.1 s (asyncio.timeout): its late response is dropped"
                )
            with_timeout = asyncio.ensure_future(t.request(Compute(0.5), Document, timeout=0.05))
            try:
                await with_timeout
            except gofast.Timeout:
                pass
            values = [m.decode(Item).value async for m in t.messages(Range(10, 15))]
            print(f"range [10, 15): {values}")
            n = t.stats()["n_timeouts"]
    served = server.stats()["n_accepted"]
    print(f"client: {n} timeouts (incl. 1 cancelled), server: {served} client served")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    else:
        asyncio.run(main())
