"""The remote range query of the getting-started guide ("Remote node might
look like").

The server's handler for ``MsgRangeQuery`` starts a worker thread that
streams the matching entries of its database, because a handler must
return at once; the handler returns a stream callback that only listens
for the client's close (``None``), so the client may cancel the query at
any point. When the worker has sent the whole range it closes the server's
side; the client then sees ``None`` and closes its side too.

Two queries run: one that completes, read with a callback, and one the
client abandons after 100 entries, read by iterating
``transport.messages()`` (leaving the loop closes the client's side). It
prints::

    range [100, 150): received 50 entries, remote closed the stream
    range [0, 100000): took 100 entries, then closed the stream
    server: query [100, 150) sent 50 of 50 entries
    server: query [0, 100000) sent N of 100000 entries, stopped by the client

Run it with ``python examples/range_query.py``.
"""

from __future__ import annotations

import argparse
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import gofast


@dataclass
class MsgRangeQuery(gofast.CborMessage, id=400):
    """Entries with ``start <= key < end``."""

    start: int
    end: int


@dataclass
class RangeResponse(gofast.CborMessage, id=401):
    """One entry of the answer."""

    key: int
    value: str


@dataclass
class QueryReport:
    """What the server did for one query."""

    start: int
    end: int
    sent: int
    cancelled: bool


class Database:
    """The server: a sorted table and a handler that streams ranges of it."""

    def __init__(self, size: int) -> None:
        self.rows = [(key, f"value-{key}") for key in range(size)]
        self.reports: list[QueryReport] = []
        self.lock = threading.Lock()
        self.done = threading.Condition(self.lock)

    def range(self, start: int, end: int) -> list[tuple[int, str]]:
        return self.rows[max(start, 0) : max(end, 0)]

    def on_range_query(
        self, stream: gofast.Stream | None, rxmsg: gofast.BinMessage
    ) -> gofast.StreamCallback:
        assert stream is not None
        query = rxmsg.decode(MsgRangeQuery)
        remote_closed = threading.Event()

        def scan() -> None:
            sent = 0
            for key, value in self.range(query.start, query.end):
                if remote_closed.is_set():  # remote has closed: stop
                    break
                stream.send(RangeResponse(key, value), flush=True)  # send entry
                sent += 1
            stream.close()
            with self.done:
                report = QueryReport(query.start, query.end, sent, remote_closed.is_set())
                self.reports.append(report)
                self.done.notify_all()

        # A handler must not block: the scan runs on its own thread (a worker
        # pool would avoid the spawn cost).
        threading.Thread(target=scan, name="range-scan", daemon=True).start()

        def on_message(msg: gofast.BinMessage | None) -> None:
            if msg is None:  # the client closed its side
                remote_closed.set()

        return on_message

    def wait_reports(self, n: int, timeout: float) -> list[QueryReport]:
        with self.done:
            if not self.done.wait_for(lambda: len(self.reports) >= n, timeout):
                raise SystemExit("timed out waiting for the server's scans")
            return sorted(self.reports, key=lambda r: r.end - r.start)


def query_with_callback(client: gofast.Transport, start: int, end: int) -> list[RangeResponse]:
    """Collects a whole range; returns when the remote has closed the stream."""
    resps: list[RangeResponse] = []
    remote_done = threading.Event()

    def callback(msg: gofast.BinMessage | None) -> None:
        if msg is None:  # remote has closed the stream
            remote_done.set()
        else:
            resps.append(msg.decode(RangeResponse))

    stream = client.stream(MsgRangeQuery(start, end), callback)
    if not remote_done.wait(30):
        raise SystemExit("timed out waiting for the range")
    stream.close()  # both sides must close to release the stream
    return resps


def first_entries(client: gofast.Transport, start: int, end: int, n: int) -> list[RangeResponse]:
    """Takes the first ``n`` entries of a range and abandons the rest."""
    resps: list[RangeResponse] = []
    for msg in client.messages(MsgRangeQuery(start, end)):
        resps.append(msg.decode(RangeResponse))
        if len(resps) == n:
            break  # closes our side of the stream: the server stops
    return resps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000, help="entries in the database")
    args = parser.parse_args()
    size: int = args.size
    db = Database(size)

    with gofast.listen(("127.0.0.1", 0)) as listener, ThreadPoolExecutor(1) as pool:

        def serve() -> gofast.Transport:
            server = listener.accept(name="example-server", timeout=10)
            server.subscribe(MsgRangeQuery, db.on_range_query)
            server.handshake()
            return server

        accepted = pool.submit(serve)
        with gofast.Transport.connect(listener.address, name="example-client") as client:
            client.handshake()
            with accepted.result(timeout=10):
                small = query_with_callback(client, 100, 150)
                assert [r.key for r in small] == list(range(100, 150))
                print(f"range [100, 150): received {len(small)} entries, remote closed the stream")

                head = first_entries(client, 0, size, 100)
                assert [r.key for r in head] == list(range(100))
                print(f"range [0, {size}): took {len(head)} entries, then closed the stream")

                for report in db.wait_reports(2, timeout=30):
                    total = len(db.range(report.start, report.end))
                    line = (
                        f"server: query [{report.start}, {report.end}) "
                        f"sent {report.sent} of {total} entries"
                    )
                    print(line + (", stopped by the client" if report.cancelled else ""))


if __name__ == "__main__":
    main()
