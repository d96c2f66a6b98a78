"""The loopback limits: blocking sockets, no framing work on the receiver.

bulk: the sender puts each 64 KiB payload behind a 4-byte length and writes
the frames 16 at a time (1 MiB ``sendall``); the receiver only counts bytes
with ``recv_into`` a reused 1 MiB buffer and, once all of them are in, answers
with the number of whole frames. No framing, no per-message Python work on
either side: the ceiling the bulk rows are read against.

request: one ``sendall`` of the length-prefixed payload, one blocking read of
the same number of bytes echoed back, by a server thread that does nothing
else. Each round trip costs two thread wake-ups (the server's, then the
client's), the least any request/response over TCP can cost; a transport with
a reader thread of its own, as gofast and the Go reference both have, adds a
hand-off on top. The floor the sequential rows are read against.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

from ..spec import CellError, Endpoint, Kind, Outcome, ServerHandle, Spec
from ._common import check_count, keep_alive, timed_requests

KINDS: tuple[Kind, ...] = ("request", "bulk")
COUNT = struct.Struct(">Q")
WRITE_BYTES = 1 << 20
"""Frames go out joined into ~1 MiB writes, as a batching writer would send them:
one 64 KiB sendall per message would be a syscall-bound floor, not a ceiling."""


def _nodelay(sock: socket.socket) -> socket.socket:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _recv_exactly(sock: socket.socket, view: memoryview) -> None:
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:])
        if not n:
            raise CellError("peer closed mid-message")
        got += n


def serve(spec: Spec) -> ServerHandle:
    if spec.kind not in KINDS:
        raise CellError(f"raw socket runs only {'/'.join(KINDS)}, not {spec.kind}")
    listener = socket.create_server(("127.0.0.1", 0))
    keep_alive(listener)
    if spec.kind == "request":
        threading.Thread(target=_echo, args=(listener, spec), daemon=True).start()
        return ServerHandle({"port": listener.getsockname()[1]}, lambda: 0)
    frame = 4 + spec.size
    expected = spec.n * frame
    count = [0]

    def receive() -> None:
        conn, _ = listener.accept()
        _nodelay(conn)
        buf = memoryview(bytearray(1 << 20))
        total = 0
        while total < expected:
            got = conn.recv_into(buf)
            if not got:
                break
            total += got
            count[0] = total // frame
        conn.sendall(COUNT.pack(count[0]))
        keep_alive(conn)

    threading.Thread(target=receive, daemon=True).start()
    return ServerHandle({"port": listener.getsockname()[1]}, lambda: count[0])


def _echo(listener: socket.socket, spec: Spec) -> None:
    conn, _ = listener.accept()
    _nodelay(conn)
    keep_alive(conn)
    buf = memoryview(bytearray(4 + spec.size))
    try:
        while True:
            _recv_exactly(conn, buf)
            conn.sendall(buf)
    except (CellError, OSError):
        return  # the client is done


def drive(spec: Spec, endpoint: Endpoint) -> Outcome:
    sock = _nodelay(socket.create_connection(("127.0.0.1", endpoint["port"])))
    if spec.kind == "request":
        return _requests(sock, spec)
    frame = struct.pack(">I", spec.size) + spec.payload()
    per_write = max(1, WRITE_BYTES // len(frame))
    block = frame * per_write
    full, rest = divmod(spec.n, per_write)
    start = time.perf_counter()
    for _ in range(full):
        sock.sendall(block)
    if rest:
        sock.sendall(frame * rest)
    reply = b""
    while len(reply) < COUNT.size:
        chunk = sock.recv(COUNT.size - len(reply))
        if not chunk:
            raise CellError("server closed before answering")
        reply += chunk
    seconds = time.perf_counter() - start
    (got,) = COUNT.unpack(reply)
    check_count("server received", got, spec.n)
    sock.close()
    return Outcome(got, seconds)


def _requests(sock: socket.socket, spec: Spec) -> Outcome:
    frame = struct.pack(">I", spec.size) + spec.payload()
    reply = memoryview(bytearray(len(frame)))

    def one() -> None:
        sock.sendall(frame)
        _recv_exactly(sock, reply)

    timed_requests(spec.warmup, one)
    start = time.perf_counter()
    lat = timed_requests(spec.n, one)
    seconds = time.perf_counter() - start
    if reply != frame:
        raise CellError("the echo differs from the request")
    sock.close()
    return Outcome(spec.n, seconds, lat)
