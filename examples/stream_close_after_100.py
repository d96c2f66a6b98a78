"""A stream the client closes after 100 messages (getting started: "To
request a stream response from remote").

The client opens a stream with ``transport.stream(msg, callback)``; the
callback fires for every message the remote sends, then once with ``None``
when the remote has closed its side. After 100 entries the client closes
its side. The server's handler hands the sending to a worker thread
(handlers must return quickly) and returns its own callback, which gets
``None`` when the client closes: the worker stops there and closes the
server's side. Messages already in flight still reach the client's
callback; it ignores them. Both sides must close for the stream to end.

It prints::

    client closed the stream after 100 entries
    server saw the client's close and stopped after sending N entries
    stream ended on both sides: client callback got None

Run it with ``python examples/stream_close_after_100.py``.
"""

from __future__ import annotations

import argparse
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import gofast


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
    """The server side: one worker thread per stream."""

    def __init__(self) -> None:
        self.sent = 0
        self.stopped = threading.Event()

    def on_feed(
        self, stream: gofast.Stream | None, msg: gofast.BinMessage
    ) -> gofast.StreamCallback:
        assert stream is not None  # a STREAM-START comes with its stream
        start = msg.decode(MsgFeed).start
        remote_closed = threading.Event()

        def work() -> None:
            seq = start
            while not remote_closed.is_set():  # until the client closes
                stream.send(RangeResponse(seq, f"value-{seq}"), flush=True)
                seq += 1
                self.sent += 1
            stream.close()
            self.stopped.set()

        threading.Thread(target=work, name="feeder", daemon=True).start()

        def on_message(m: gofast.BinMessage | None) -> None:
            if m is None:  # the client has closed its side
                remote_closed.set()

        return on_message


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=100, help="entries before closing")
    args = parser.parse_args()
    limit: int = args.limit

    feeder = Feeder()
    resps: list[RangeResponse] = []  # place to collect the streamed entries
    lock = threading.Lock()
    ended = threading.Event()
    stream: gofast.Stream | None = None
    closed_at: list[int] = []

    def close_once() -> None:
        # Called with `lock` held, from the callback or the main thread.
        if stream is not None and not closed_at and len(resps) >= limit:
            closed_at.append(len(resps))
            stream.close()

    def callback(msg: gofast.BinMessage | None) -> None:
        if msg is None:  # the remote has closed the stream
            ended.set()
            return
        with lock:
            if closed_at:
                return  # in flight when we closed: dropped
            resps.append(msg.decode(RangeResponse))
            close_once()  # we have received `limit` entries: close

    with gofast.listen(("127.0.0.1", 0)) as listener, ThreadPoolExecutor(1) as pool:

        def serve() -> gofast.Transport:
            server = listener.accept(name="example-server", timeout=10)
            server.subscribe(MsgFeed, feeder.on_feed)
            server.handshake()
            return server

        accepted = pool.submit(serve)
        with gofast.Transport.connect(listener.address, name="example-client") as client:
            client.handshake()
            with accepted.result(timeout=10):
                opened = client.stream(MsgFeed(start=0), callback)
                with lock:
                    stream = opened
                    close_once()  # in case `limit` entries came before we got here
                if not (feeder.stopped.wait(30) and ended.wait(30)):
                    raise SystemExit("timed out waiting for the stream to end")

    assert [r.seq for r in resps] == list(range(len(resps)))
    print(f"client closed the stream after {closed_at[0]} entries")
    print(f"server saw the client's close and stopped after sending {feeder.sent} entries")
    print("stream ended on both sides: client callback got None")


if __name__ == "__main__":
    main()
