"""The getting-started guide's client ("Client-code"), for examples/server.py.

It dials the server (``--host``, ``--port``), sets its flush period and
heartbeat, handshakes, then posts ``--posts`` messages, makes
``--requests`` requests from 4 threads at once (a transport is shared
freely between threads), pings, and says bye; the server's answer to bye
carries what it counted. It prints, and exits 0 when every count matches::

    client: handshake with example-server (version 1)
    client: posted 100, requested 10 (all answered), ping 'hello'
    client: server counted 100 posts and 10 requests

Run: ``python examples/server.py --port 9998`` then
``python examples/client.py --port 9998``.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor

from messages import MsgBye, MsgPost, MsgRequest, MsgResponse

import gofast

FLUSH_TICK = 0.005
HEARTBEAT = 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9998)
    parser.add_argument("--posts", type=int, default=100)
    parser.add_argument("--requests", type=int, default=10)
    args = parser.parse_args()
    posts: int = args.posts
    requests: int = args.requests

    with gofast.Transport.connect((args.host, args.port), name="example-client") as trans:
        trans.flush_period(FLUSH_TICK)
        trans.send_heartbeat(HEARTBEAT)
        peer = trans.handshake()
        print(f"client: handshake with {peer.name} (version {peer.version})")

        for seq in range(posts):
            trans.post(MsgPost(seq, f"post number {seq}"))  # batched; no reply
        trans.flush()

        def ask(number: int) -> bool:
            answer: MsgResponse = trans.request(MsgRequest(number), MsgResponse, timeout=10)
            return answer.number == number and answer.square == number * number

        with ThreadPoolExecutor(4) as pool:
            answered = sum(pool.map(ask, range(requests)))
        echo = trans.ping("hello", timeout=10)
        state = "all answered" if answered == requests else f"{answered} answered right"
        print(f"client: posted {posts}, requested {requests} ({state}), ping {echo!r}")

        # Handled after every post (in order on the server's reader thread).
        bye: MsgBye = trans.request(MsgBye(), MsgBye, timeout=10)
        print(f"client: server counted {bye.posts} posts and {bye.requests} requests")

    if (bye.posts, bye.requests, answered) != (posts, requests, requests):
        sys.exit(1)


if __name__ == "__main__":
    main()
