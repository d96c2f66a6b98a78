"""The getting-started guide's server ("Example server-code"), with
examples/client.py as its client.

It listens on 127.0.0.1 (``--port``, 0 picks a free one) and prints the
address first, so a script can start the client on it::

    example-server listening on 127.0.0.1:9998

For each connection it sets the flush period and heartbeat, subscribes its
handlers, then handshakes (subscribe first: messages arrive from the
handshake on). It answers ``MsgRequest`` with the square of the number
asked, counts ``MsgPost`` messages, and answers ``MsgBye`` with its
counts, which ends that client's session. After ``--clients`` sessions
(default 1) it prints a summary and exits::

    server: client example-client: 100 posts, 10 requests
    server: served 1 client(s)

Run: ``python examples/server.py --port 9998`` then
``python examples/client.py --port 9998``.
"""

from __future__ import annotations

import argparse
import sys
import threading

from messages import MsgBye, MsgPost, MsgRequest, MsgResponse

import gofast

FLUSH_TICK = 0.005  # seconds a batched frame may wait
HEARTBEAT = 1.0  # seconds between heartbeats


class Session:
    """One client connection and what it sent."""

    def __init__(self, transport: gofast.Transport) -> None:
        self.transport = transport
        self.posts = 0
        self.requests = 0
        self.bye = threading.Event()

    # Handlers run on the transport's reader thread: they answer at once.

    def on_post(self, stream: gofast.Stream | None, msg: gofast.BinMessage) -> None:
        self.posts += 1

    def on_request(self, stream: gofast.Stream | None, msg: gofast.BinMessage) -> None:
        assert stream is not None
        self.requests += 1
        number = msg.decode(MsgRequest).number
        stream.respond(MsgResponse(number, number * number))

    def on_bye(self, stream: gofast.Stream | None, msg: gofast.BinMessage) -> None:
        assert stream is not None
        stream.respond(MsgBye(self.posts, self.requests))
        self.bye.set()

    def run(self, timeout: float) -> None:
        t = self.transport
        t.flush_period(FLUSH_TICK)
        t.send_heartbeat(HEARTBEAT)
        t.subscribe(MsgPost, self.on_post)
        t.subscribe(MsgRequest, self.on_request)
        t.subscribe(MsgBye, self.on_bye)
        with t:
            peer = t.handshake()
            if not self.bye.wait(timeout):
                print(f"server: {peer.name} said no bye within {timeout}s", file=sys.stderr)
                return
            print(f"server: client {peer.name}: {self.posts} posts, {self.requests} requests")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9998, help="0: any free port")
    parser.add_argument("--clients", type=int, default=1, help="sessions to serve, then exit")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per session")
    args = parser.parse_args()

    sessions: list[Session] = []
    threads: list[threading.Thread] = []
    with gofast.listen((args.host, args.port)) as listener:
        address = listener.address
        assert not isinstance(address, str)  # (host, port): a TCP listener
        host, port = address
        print(f"example-server listening on {host}:{port}", flush=True)
        for _ in range(args.clients):
            transport = listener.accept(name="example-server", timeout=args.timeout)
            session = Session(transport)
            thread = threading.Thread(target=session.run, args=(args.timeout,))
            thread.start()
            sessions.append(session)
            threads.append(thread)
    for thread in threads:
        thread.join()
    served = sum(1 for s in sessions if s.bye.is_set())
    print(f"server: served {served} client(s)", flush=True)
    if served < len(sessions):
        sys.exit(1)


if __name__ == "__main__":
    main()
