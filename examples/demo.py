"""The gofast demo: a server and a client, in two processes on 127.0.0.1,
exchanging POSTs, REQUESTs (one thread, then 16) and a STREAM, printing
messages per second and both sides' statistics.

    python examples/demo.py [--count N]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import gofast


@dataclass
class Note(gofast.CborMessage, id=100):
    """One-way message."""

    seq: int
    text: str


@dataclass
class Query(gofast.CborMessage, id=101):
    """Request; answered with a Query echoing `seq`."""

    seq: int


@dataclass
class Feed(gofast.CborMessage, id=102):
    """Opens a stream of `count` entries from the server."""

    count: int


@dataclass
class Tally(gofast.CborMessage, id=103):
    """Request for the server's counters, and the answer."""

    notes: int
    stats: dict[str, int]


def serve(port_q: Any) -> None:
    with gofast.listen(("127.0.0.1", 0)) as lis:
        port_q.put(lis.address)
        server = lis.accept(name="demo-server")
    notes = [0]
    tallies = [0]
    done = threading.Event()

    def on_note(_stream: gofast.Stream | None, _msg: gofast.BinMessage) -> None:
        notes[0] += 1

    def on_query(stream: gofast.Stream | None, msg: gofast.BinMessage) -> None:
        assert stream is not None
        stream.respond(msg)  # a BinMessage is sent back as it came

    def on_feed(stream: gofast.Stream | None, msg: gofast.BinMessage) -> gofast.StreamCallback:
        assert stream is not None
        count = msg.decode(Feed).count
        entry = gofast.BinMessage(Feed.ID, b"e" * 48)

        def pump() -> None:  # handlers must not block: stream from a thread
            for _ in range(count):
                stream.send(entry)
            stream.close()

        threading.Thread(target=pump, daemon=True).start()
        return lambda _m: None

    def on_tally(stream: gofast.Stream | None, _msg: gofast.BinMessage) -> None:
        assert stream is not None
        stream.respond(Tally(notes[0], server.stats()))
        tallies[0] += 1
        if tallies[0] == 2:  # the client's last call
            done.set()

    server.subscribe(Note, on_note).subscribe(Query, on_query)
    server.subscribe(Feed, on_feed).subscribe(Tally, on_tally)
    server.handshake()
    done.wait(300)
    server.close()


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:>12,.0f} msg/s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=200_000, help="POSTs and stream entries")
    args = ap.parse_args()
    port_q: Any = mp.Queue()
    server = mp.Process(target=serve, args=(port_q,))
    server.start()
    client = gofast.Transport.connect(port_q.get(timeout=30), name="demo-client")
    with client:
        peer = client.handshake()
        print(f"handshake with {peer.name!r}, version {peer.version}")

        start = time.perf_counter()
        for i in range(args.count):
            client.post(Note(i, "hello"))
        tally = client.request(Tally(0, {}), Tally)
        elapsed = time.perf_counter() - start
        print(f"POST            {rate(tally.notes, elapsed)}  ({tally.notes} arrived)")

        n = args.count // 20
        start = time.perf_counter()
        for i in range(n):
            assert client.request(Query(i), Query).seq == i
        print(f"REQUEST         {rate(n, time.perf_counter() - start)}  (one thread)")

        def worker(t: int) -> None:
            for i in range(n // 16):
                assert client.request(Query(t * 1_000_000 + i), Query).seq == t * 1_000_000 + i

        start = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(worker, range(16)))
        print(f"REQUEST x16     {rate(n // 16 * 16, time.perf_counter() - start)}  (16 threads)")

        received = 0
        start = time.perf_counter()
        for _entry in client.messages(Feed(args.count)):
            received += 1
        elapsed = time.perf_counter() - start
        print(f"STREAM          {rate(received, elapsed)}  ({received} entries)")

        ping = client.ping("hello")
        final = client.request(Tally(0, {}), Tally)
        print(f"ping -> {ping!r}")
        print("client stats:", {k: v for k, v in client.stats().items() if v})
        print("server stats:", {k: v for k, v in final.stats.items() if v})
    server.join(60)


if __name__ == "__main__":
    main()
