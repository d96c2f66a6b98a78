"""A raw gofast peer that waits to be SIGKILLed (by the process under test).

Usage: dying_peer.py MODE. Listens on 127.0.0.1, prints its port, accepts one
connection, plays the peer's half of the whoami handshake by hand, then
reads and discards everything; in MODE ``respond`` it also sends REQUESTs
(id 100) in bursts, so the other side keeps responding until the kill.
"""

from __future__ import annotations

import socket
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wire import REQUEST, WHOAMI_ID, RawPeer, encode_frame  # noqa: E402


def main() -> None:
    mode = sys.argv[1]
    with socket.create_server(("127.0.0.1", 0)) as lis:
        print(lis.getsockname()[1], flush=True)
        lis.settimeout(10.0)
        conn, _ = lis.accept()
    raw = RawPeer(conn, name="dying-peer")
    req = raw.read_frame(10.0)
    assert req.kind == REQUEST and req.id == WHOAMI_ID, req
    raw.send_frame(REQUEST, req.opaque, WHOAMI_ID, raw.whoami())
    raw.send_frame(REQUEST, raw.next_opaque(), WHOAMI_ID, raw.whoami())
    if mode == "respond":
        threading.Thread(target=send_requests, args=(raw,), daemon=True).start()
    conn.settimeout(None)
    while conn.recv(1 << 16):
        pass


def send_requests(raw: RawPeer) -> None:
    while True:
        burst = b"".join(
            encode_frame(REQUEST, raw.next_opaque(), 100, b"q" * 16) for _ in range(200)
        )
        if raw._next > 9_000:  # stay below the other side's range (10000..)
            raw._next = 1_000
        raw.sock.sendall(burst)


if __name__ == "__main__":
    main()
