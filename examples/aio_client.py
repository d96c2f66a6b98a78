"""The getting-started guide's client ("Client-code") with asyncio, as
examples/client.py, for examples/aio_server.py (or examples/server.py).

It dials the server (``--host``, ``--port``), sets its flush period and
heartbeat, handshakes, then posts ``--posts`` messages, makes
``--requests`` requests all at once (each awaited by a task of its own, on
one connection), pings, and says bye; the server's answer to bye carries
what it counted. It prints, and exits 0 when every count matches::

    client: handshake with example-server (version 1)
    client: posted 100, requested 10 (all answered), ping 'hello'
    client: server counted 100 posts and 10 requests

Run: ``python examples/aio_server.py --port 9998`` then
``python examples/aio_client.py --port 9998``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from messages import MsgBye, MsgPost, MsgRequest, MsgResponse

import gofast.aio

FLUSH_TICK = 0.005
HEARTBEAT = 1.0


async def main(host: str, port: int, posts: int, requests: int) -> None:
    async with await gofast.aio.connect((host, port), name="example-client") as trans:
        trans.flush_period(FLUSH_TICK)
        trans.send_heartbeat(HEARTBEAT)
        peer = await trans.handshake()
        print(f"client: handshake with {peer.name} (version {peer.version})")

        for seq in range(posts):
            await trans.post(MsgPost(seq, f"post number {seq}"))  # batched; no reply
        trans.flush()

        async def ask(number: int) -> bool:
            answer = await trans.request(MsgRequest(number), MsgResponse, timeout=10)
            return answer.number == number and answer.square == number * number

        answered = sum(await asyncio.gather(*(ask(n) for n in range(requests))))
        echo = await trans.ping("hello", timeout=10)
        state = "all answered" if answered == requests else f"{answered} answered right"
        print(f"client: posted {posts}, requested {requests} ({state}), ping {echo!r}")

        # Handled after every post (in order, on the server's side too).
        bye = await trans.request(MsgBye(), MsgBye, timeout=10)
        print(f"client: server counted {bye.posts} posts and {bye.requests} requests")

    if (bye.posts, bye.requests, answered) != (posts, requests, requests):
        sys.exit(1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9998)
    parser.add_argument("--posts", type=int, default=100)
    parser.add_argument("--requests", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port, args.posts, args.requests))
