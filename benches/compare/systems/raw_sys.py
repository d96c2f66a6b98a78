"""The loopback limit for bulk: blocking sockets, no framing work on the receiver.

The sender puts each 64 KiB payload behind a 4-byte length and writes the
frames 16 at a time (1 MiB ``sendall``); the receiver only counts bytes with
``recv_into`` a reused 1 MiB buffer and, once all of them are in, answers with
the number of whole frames. No framing, no per-message Python work on either
side: the ceiling the bulk rows are read against.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

from ..spec import CellError, Endpoint, Outcome, ServerHandle, Spec
from ._common import check_count, keep_alive

COUNT = struct.Struct(">Q")
WRITE_BYTES = 1 << 20
"""Frames go out joined into ~1 MiB writes, as a batching writer would send them:
one 64 KiB sendall per message would be a syscall-bound floor, not a ceiling."""


def _nodelay(sock: socket.socket) -> socket.socket:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def serve(spec: Spec) -> ServerHandle:
    if spec.kind != "bulk":
        raise CellError(f"raw socket runs only the bulk workload, not {spec.kind}")
    listener = socket.create_server(("127.0.0.1", 0))
    keep_alive(listener)
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


def drive(spec: Spec, endpoint: Endpoint) -> Outcome:
    sock = _nodelay(socket.create_connection(("127.0.0.1", endpoint["port"])))
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
