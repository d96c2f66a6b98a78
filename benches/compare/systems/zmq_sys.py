"""pyzmq with the socket pattern that fits each workload.

one-way, bulk  PUSH -> PULL, then an empty end frame; the client asks a REP
               socket for the count, which the server answers only after the
               end frame (so after every message)
request        REQ -> REP, one at a time
request16      DEALER -> ROUTER, 16 requests outstanding from one thread, each
               tagged with a 4-byte id so its round trip can be timed
stream         PUSH (server) -> PULL (client), started by a REQ, ended by an
               empty frame

PUSH blocks at its high-water mark rather than dropping, so counts must match.
Sockets are made in the calling thread and then used only by the serving
thread (a thread start is the memory barrier zmq asks for when moving one).
Server sockets are kept alive for the life of the process: the serving thread
ends right after its last send, and a socket collected then would be closed
with LINGER 0, dropping what its queue still holds.
"""

from __future__ import annotations

import struct
import threading
import time

import zmq

from ..spec import Endpoint, Outcome, ServerHandle, Spec
from ._common import check_count, check_reply, keep_alive, timed_requests

END = b""


def _bind(ctx: zmq.Context[zmq.Socket[bytes]], kind: int) -> tuple[zmq.Socket[bytes], int]:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind("tcp://127.0.0.1:*")
    keep_alive(sock)  # a collected socket closes with LINGER 0: queued messages are lost
    endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    return sock, int(endpoint.rsplit(":", 1)[1])


def _connect(ctx: zmq.Context[zmq.Socket[bytes]], kind: int, port: int) -> zmq.Socket[bytes]:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{port}")
    return sock


def serve(spec: Spec) -> ServerHandle:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    count = [0]
    if spec.kind in ("oneway", "bulk"):
        pull, data_port = _bind(ctx, zmq.PULL)
        rep, ctl_port = _bind(ctx, zmq.REP)

        def sink() -> None:
            while pull.recv() != END:
                count[0] += 1
            rep.recv()
            rep.send(str(count[0]).encode())

        target, endpoint = sink, {"data": data_port, "control": ctl_port}
    elif spec.kind == "request":
        rep, port = _bind(ctx, zmq.REP)

        def echo() -> None:
            while True:
                rep.send(rep.recv())

        target, endpoint = echo, {"data": port}
    elif spec.kind == "request16":
        router, port = _bind(ctx, zmq.ROUTER)

        def route() -> None:
            while True:
                router.send_multipart(router.recv_multipart())

        target, endpoint = route, {"data": port}
    else:
        push, data_port = _bind(ctx, zmq.PUSH)
        rep, ctl_port = _bind(ctx, zmq.REP)
        payload = spec.payload()

        def source() -> None:
            n = int(rep.recv())
            rep.send(b"go")
            for _ in range(n):
                push.send(payload)
            push.send(END)

        target, endpoint = source, {"data": data_port, "control": ctl_port}
    keep_alive(ctx)
    threading.Thread(target=target, daemon=True).start()
    return ServerHandle(endpoint, lambda: count[0])


def drive(spec: Spec, endpoint: Endpoint) -> Outcome:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    payload = spec.payload()
    if spec.kind in ("oneway", "bulk"):
        push = _connect(ctx, zmq.PUSH, endpoint["data"])
        req = _connect(ctx, zmq.REQ, endpoint["control"])
        start = time.perf_counter()
        for _ in range(spec.n):
            push.send(payload)
        push.send(END)
        req.send(b"count")
        got = int(req.recv())
        seconds = time.perf_counter() - start
        check_count("server received", got, spec.n)
        return Outcome(got, seconds)
    if spec.kind == "stream":
        pull = _connect(ctx, zmq.PULL, endpoint["data"])
        req = _connect(ctx, zmq.REQ, endpoint["control"])
        received = 0
        start = time.perf_counter()
        req.send(str(spec.n).encode())
        req.recv()
        while pull.recv() != END:
            received += 1
        seconds = time.perf_counter() - start
        check_count("client received", received, spec.n)
        return Outcome(received, seconds)
    if spec.kind == "request":
        sock = _connect(ctx, zmq.REQ, endpoint["data"])

        def one() -> None:
            sock.send(payload)
            check_reply(sock.recv(), spec.size)

        timed_requests(spec.warmup, one)
        start = time.perf_counter()
        lat = timed_requests(spec.n, one)
        return Outcome(spec.n, time.perf_counter() - start, lat)
    dealer = _connect(ctx, zmq.DEALER, endpoint["data"])
    _outstanding(dealer, payload, spec.warmup, spec.concurrency)
    start = time.perf_counter()
    lat = _outstanding(dealer, payload, spec.n, spec.concurrency)
    return Outcome(len(lat), time.perf_counter() - start, lat)


def _outstanding(dealer: zmq.Socket[bytes], payload: bytes, n: int, depth: int) -> list[int]:
    """n requests keeping ``depth`` in flight; each timed from send to its reply."""
    sent_at = [0] * n
    lat = [0] * n
    sent = 0
    for _ in range(min(depth, n)):
        sent_at[sent] = time.perf_counter_ns()
        dealer.send_multipart([struct.pack("<I", sent), payload])
        sent += 1
    for _ in range(n):
        tag, body = dealer.recv_multipart()
        i = struct.unpack("<I", tag)[0]
        lat[i] = time.perf_counter_ns() - sent_at[i]
        check_reply(body, len(payload))
        if sent < n:
            sent_at[sent] = time.perf_counter_ns()
            dealer.send_multipart([struct.pack("<I", sent), payload])
            sent += 1
    return lat
