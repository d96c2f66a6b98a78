"""gofast for Python: default settings, the sync API, handlers subscribed by
id on the server, one transport per client; over TCP here, over a Unix
socket or TLS in ``gofast_unix_sys`` and ``gofast_tls_sys`` (same code).

Every message is a ``gofast.BinMessage(id, payload)``, so the bytes on the wire
are the payload plus gofast's own framing, as for every other system.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from typing import Any

import gofast

from ..spec import Endpoint, Outcome, ServerHandle, Spec
from ._common import check_count, check_reply, keep_alive, threaded_requests, timed_requests

DATA_ID, COUNT_ID, STREAM_ID, ECHO_ID, BATCH_ID = 100, 101, 102, 103, 104


def _listen(link: str) -> tuple[gofast.Listener, Endpoint]:
    """A listener for ``link`` ("tcp", "unix", "tls") and what a client
    needs to reach it (for TLS: the test CA, made here by trustme)."""
    if link == "unix":
        path = os.path.join(tempfile.mkdtemp(prefix="gofast-bench-"), "bench.sock")
        return gofast.listen(path), {"path": path}
    if link == "tls":
        import trustme

        ca = trustme.CA()
        leaf = ca.issue_cert("localhost", "127.0.0.1")
        tls = gofast.TLS(cert=leaf.cert_chain_pems[0].bytes(), key=leaf.private_key_pem.bytes())
        listener = gofast.listen(("127.0.0.1", 0), tls=tls)
        return listener, {"port": listener.address[1], "ca": ca.cert_pem.bytes().decode()}
    listener = gofast.listen(("127.0.0.1", 0))
    return listener, {"port": listener.address[1]}


def serve(spec: Spec, link: str = "tcp") -> ServerHandle:
    """Accepts one client in a thread; counts posts (one by one on DATA_ID, in
    lists on BATCH_ID), echoes requests, and pumps ``n`` messages down a stream
    from its own thread (handlers must return fast)."""
    listener, endpoint = _listen(link)
    count = [0]
    payload = gofast.BinMessage(STREAM_ID, spec.payload())

    def on_data(_s: Any, _m: gofast.BinMessage) -> None:
        count[0] += 1

    def on_batch(msgs: list[gofast.BinMessage]) -> None:
        count[0] += len(msgs)

    def on_count(s: Any, _m: gofast.BinMessage) -> None:
        s.respond(gofast.BinMessage(COUNT_ID, str(count[0]).encode()))

    def on_echo(s: Any, m: gofast.BinMessage) -> None:
        s.respond(m)

    def on_stream(s: Any, m: gofast.BinMessage) -> Any:
        n = int(m.data)

        def pump() -> None:
            for _ in range(n):
                s.send(payload)
            s.close()

        threading.Thread(target=pump, daemon=True).start()
        return lambda _msg: None

    def accept() -> None:
        t = listener.accept(name="compare-server")
        keep_alive(t)
        t.subscribe(DATA_ID, on_data).subscribe(COUNT_ID, on_count)
        t.subscribe(ECHO_ID, on_echo).subscribe(STREAM_ID, on_stream)
        t.subscribe_batch(BATCH_ID, on_batch)
        t.handshake()

    keep_alive(listener)
    threading.Thread(target=accept, daemon=True).start()
    return ServerHandle(endpoint, lambda: count[0])


def drive(spec: Spec, endpoint: Endpoint) -> Outcome:
    t = connect(endpoint)
    try:
        if spec.kind in ("oneway", "bulk"):
            return _oneway(t, spec)
        if spec.kind == "stream":
            return _stream(t, spec)
        echo = gofast.BinMessage(ECHO_ID, spec.payload())

        def one() -> None:
            check_reply(t.request(echo).data, spec.size)

        timed_requests(spec.warmup, one)
        if spec.kind == "request":
            start = time.perf_counter()
            lat = timed_requests(spec.n, one)
            return Outcome(spec.n, time.perf_counter() - start, lat)
        return threaded_requests(spec.n, spec.concurrency, one)
    finally:
        t.close()


def connect(endpoint: Endpoint) -> gofast.Transport:
    tls = None
    if "ca" in endpoint:
        tls = gofast.TLS(ca=str(endpoint["ca"]).encode(), server_name="localhost")
    address: Any = endpoint["path"] if "path" in endpoint else ("127.0.0.1", endpoint["port"])
    t = gofast.Transport.connect(address, name="compare-client", tls=tls)
    t.handshake()
    return t


def server_count(t: gofast.Transport, spec: Spec, start: float) -> Outcome:
    """Asks for the server's count, which it answers only after every post
    before the request on the connection was handled."""
    got = int(t.request(gofast.BinMessage(COUNT_ID, b"")).data)
    seconds = time.perf_counter() - start
    check_count("server received", got, spec.n)
    return Outcome(got, seconds)


def _oneway(t: gofast.Transport, spec: Spec) -> Outcome:
    msg = gofast.BinMessage(DATA_ID, spec.payload())
    start = time.perf_counter()
    for _ in range(spec.n):
        t.post(msg)
    return server_count(t, spec, start)


def _stream(t: gofast.Transport, spec: Spec) -> Outcome:
    finished = threading.Event()
    received = [0]

    def on_msg(m: gofast.BinMessage | None) -> None:
        if m is None:
            finished.set()
        else:
            received[0] += 1

    start = time.perf_counter()
    s = t.stream(gofast.BinMessage(STREAM_ID, str(spec.n).encode()), on_msg)
    finished.wait()
    seconds = time.perf_counter() - start
    s.close()
    check_count("client received", received[0], spec.n)
    return Outcome(received[0], seconds)
