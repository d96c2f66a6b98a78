"""The getting-started guide's server ("Example server-code") with asyncio,
as examples/server.py; examples/aio_client.py (or examples/client.py) is
its client.

It listens on 127.0.0.1 (``--port``, 0 picks a free one) and prints the
address first, so a script can start the client on it::

    example-server listening on 127.0.0.1:9998

Each connection it accepts runs as a task of its own on the one loop: it
sets the flush period and heartbeat, subscribes its handlers, then
handshakes (subscribe first: messages arrive from the handshake on). It
answers ``MsgRequest`` with the square of the number asked, counts
``MsgPost`` messages, and answers ``MsgBye`` with its counts, which ends
that client's session. After ``--clients`` sessions (default 1) it prints a
summary and exits::

    server: client example-client: 100 posts, 10 requests
    server: served 1 client(s)

Run: ``python examples/aio_server.py --port 9998`` then
``python examples/aio_client.py --port 9998``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from messages import MsgBye, MsgPost, MsgRequest, MsgResponse

import gofast
import gofast.aio

FLUSH_TICK = 0.005  # seconds a batched frame may wait
HEARTBEAT = 1.0  # seconds between heartbeats


class Session:
    """One client connection and what it sent."""

    def __init__(self, transport: gofast.aio.Transport) -> None:
        self.transport = transport
        self.posts = 0
        self.requests = 0
        self.bye = asyncio.Event()

    # Handlers run on the loop: a plain function answers by returning.

    def on_post(self, stream: object, msg: gofast.BinMessage) -> None:
        self.posts += 1

    def on_request(self, stream: object, msg: gofast.BinMessage) -> MsgResponse:
        self.requests += 1
        number = msg.decode(MsgRequest).number
        return MsgResponse(number, number * number)

    def on_bye(self, stream: object, msg: gofast.BinMessage) -> MsgBye:
        self.bye.set()
        return MsgBye(self.posts, self.requests)

    async def run(self, timeout: float) -> None:
        t = self.transport
        t.flush_period(FLUSH_TICK)
        t.send_heartbeat(HEARTBEAT)
        t.subscribe(MsgPost, self.on_post)
        t.subscribe(MsgRequest, self.on_request)
        t.subscribe(MsgBye, self.on_bye)
        async with t:
            peer = await t.handshake()
            try:
                async with asyncio.timeout(timeout):
                    await self.bye.wait()
            except TimeoutError:
                print(f"server: {peer.name} said no bye within {timeout}s", file=sys.stderr)
                return
            print(f"server: client {peer.name}: {self.posts} posts, {self.requests} requests")


async def main(host: str, port: int, clients: int, timeout: float) -> None:
    sessions: list[Session] = []
    async with asyncio.TaskGroup() as tasks:
        async with gofast.aio.listen((host, port)) as listener:
            address = listener.address
            assert not isinstance(address, str)  # (host, port): a TCP listener
            print(f"example-server listening on {address[0]}:{address[1]}", flush=True)
            for _ in range(clients):
                transport = await listener.accept(name="example-server", timeout=timeout)
                session = Session(transport)
                tasks.create_task(session.run(timeout))
                sessions.append(session)
    served = sum(1 for s in sessions if s.bye.is_set())
    print(f"server: served {served} client(s)", flush=True)
    if served < len(sessions):
        sys.exit(1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9998, help="0: any free port")
    parser.add_argument("--clients", type=int, default=1, help="sessions to serve, then exit")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per session")
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port, args.clients, args.timeout))
