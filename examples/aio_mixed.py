"""An asyncio service and a sync client on one connection: gofast.aio and
gofast speak the same protocol through the same core.

A ``gofast.aio`` server answers requests with an ``async def`` handler and
streams with an async generator; a plain threaded ``gofast.Transport``
client (on a worker thread, as a legacy program would be) uses it. It prints::

    sync client: 're: hello from a thread'
    sync client streamed 5 items: [0, 1, 4, 9, 16]
    aio server: 1 request, 1 stream

Run it with ``python examples/aio_mixed.py``.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import gofast
import gofast.aio


@dataclass
class Hello(gofast.CborMessage, id=220):
    text: str


@dataclass
class Squares(gofast.CborMessage, id=221):
    n: int


@dataclass
class Square(gofast.CborMessage, id=222):
    value: int


def sync_client(address: tuple[str, int] | str) -> None:
    with gofast.Transport.connect(address, name="sync-client") as t:
        t.handshake()
        print(f"sync client: {t.request(Hello('hello from a thread'), Hello).text!r}")
        items = [m.decode(Square).value for m in t.messages(Squares(5))]
        print(f"sync client streamed {len(items)} items: {items}")


async def main() -> None:
    async def on_hello(stream: object, msg: gofast.BinMessage) -> Hello:
        await asyncio.sleep(0)
        return Hello("re: " + msg.decode(Hello).text)

    async def on_squares(stream: object, msg: gofast.BinMessage) -> AsyncIterator[Square]:
        for i in range(msg.decode(Squares).n):
            yield Square(i * i)

    server = gofast.aio.Server(("127.0.0.1", 0), name="aio-server")
    server.subscribe(Hello, on_hello).subscribe(Squares, on_squares)
    async with server:
        await asyncio.to_thread(sync_client, server.address)
        st = server.stats()
    print(f"aio server: {st['n_rxreq'] - 1} request, {st['n_rxstart']} stream")


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    asyncio.run(main())
