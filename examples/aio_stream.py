"""A stream the client closes after 100 messages, with asyncio (getting
started: "To request a stream response from remote", as
examples/stream_close_after_100.py, with gofast.aio).

The client opens a stream with ``transport.stream(msg)`` and reads it with
``async for``; after 100 entries it closes its side (leaving the
``async with`` block). The server's handler is an ``async def``: it sends
entries until ``stream.recv()`` returns None, which is the client's close,
and its return closes the server's side. Entries already in flight when the
client closed still reach it; both sides must close for the stream to end.

It prints::

    client closed the stream after 100 entries
    server saw the client's close and stopped after sending N entries
    stream ended on both sides: N-100 more entries were in flight

Run it with ``python examples/aio_stream.py``.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass

import gofast
import gofast.aio


@dataclass
class MsgFeed(gofast.CborMessage, id=300):
    """Opens a stream: the server sends entries until told to stop."""

    start: int


@dataclass
class RangeResponse(gofast.CborMessage, id=301):
    """One entry of the stream."""

    seq: int
    value: str


class Feeder:
    """The server side: one ``async def`` handler run per stream."""

    def __init__(self) -> None:
        self.sent = 0

    async def on_feed(self, stream: gofast.aio.Stream, msg: gofast.BinMessage) -> None:
        seq = msg.decode(MsgFeed).start
        client_closed = asyncio.ensure_future(stream.recv())  # None: the client closed
        while not client_closed.done():
            await stream.send(RangeResponse(seq, f"value-{seq}"), flush=True)
            seq += 1
            self.sent += 1
            # send() is ready at once while the send queue has room: give the
            # loop a turn, so the client's close can come in.
            await asyncio.sleep(0)
        # Returning closes the server's side.


async def main(limit: int) -> None:
    feeder = Feeder()
    server = gofast.aio.Server(("127.0.0.1", 0), name="example-server")
    server.subscribe(MsgFeed, feeder.on_feed)
    async with server:
        async with await gofast.aio.connect(server.address, name="example-client") as client:
            await client.handshake()
            resps: list[RangeResponse] = []
            async with client.stream(MsgFeed(start=0)) as stream:
                async for m in stream:
                    resps.append(m.decode(RangeResponse))
                    if len(resps) == limit:
                        break  # leaving the block closes our side
            # The rest of what was in flight, until the server closes its side.
            async with asyncio.timeout(30):
                late = [m.decode(RangeResponse) async for m in stream]

    assert [r.seq for r in resps + late] == list(range(feeder.sent))
    print(f"client closed the stream after {len(resps)} entries")
    print(f"server saw the client's close and stopped after sending {feeder.sent} entries")
    print(f"stream ended on both sides: {len(late)} more entries were in flight")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=100, help="entries before closing")
    asyncio.run(main(parser.parse_args().limit))
