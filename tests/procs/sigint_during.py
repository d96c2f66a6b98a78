"""Blocks in one gofast call and gets SIGINT while blocked (tests/test_signals.py).

Usage: sigint_during.py CALL [READER]. A raw peer plays along just enough to
make CALL block (it never answers, or stops reading). Another thread sends
SIGINT once the call is known to be blocked, and the script prints how long
the KeyboardInterrupt took to arrive after it, as JSON. READER is the
setting ``reader`` of the transport ("thread", the default, or "shared")."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gofast  # noqa: E402
from gofast import BinMessage  # noqa: E402
from wire import REQUEST, STREAM_START, WHOAMI_ID, RawPeer, raw_server  # noqa: E402

READER = {"reader": sys.argv[2] if len(sys.argv) > 2 else "thread"}
SMALL = {"pending.max": 64 * 1024, **READER}
sent_at: list[float] = []


@contextlib.contextmanager
def blocked_call() -> Iterator[None]:
    """Reports how long after the signal the KeyboardInterrupt came out of
    the call (before any cleanup, such as close() lingering, runs)."""
    try:
        yield
    except KeyboardInterrupt:
        print(json.dumps({"after_signal": time.monotonic() - sent_at[0]}), flush=True)
        return
    print(json.dumps({"error": "the call returned"}), flush=True)


def interrupt_when(blocked: Callable[[], bool]) -> None:
    def run() -> None:
        deadline = time.monotonic() + 20
        while not blocked():
            if time.monotonic() > deadline:
                os._exit(4)
            time.sleep(0.005)
        sent_at.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=run, daemon=True).start()


def stuck(progress: Callable[[], int], quiet: float = 0.3) -> Callable[[], bool]:
    """True once `progress()` has not moved for `quiet` seconds."""
    last = [progress(), time.monotonic()]

    def check() -> bool:
        now = progress()
        if now != last[0]:
            last[:] = [now, time.monotonic()]
        return time.monotonic() - last[1] > quiet

    return check


def handshake() -> None:
    with socket.create_server(("127.0.0.1", 0)) as lis:
        t = gofast.Transport.connect(lis.getsockname()[:2], settings=READER)
        conn, _ = lis.accept()
        raw = RawPeer(conn)
        got = threading.Event()

        def read_whoami() -> None:
            frame = raw.read_frame(10)
            assert frame.kind == REQUEST and frame.id == WHOAMI_ID
            got.set()

        threading.Thread(target=read_whoami, daemon=True).start()
        interrupt_when(got.is_set)
        with blocked_call():
            t.handshake(30.0)  # the raw peer never answers


def flooded(send: Callable[[gofast.Transport], None]) -> None:
    with raw_server(SMALL) as (raw, t):  # the raw peer stops reading now
        count = [0]

        def loop() -> None:
            while True:
                send(t)
                count[0] += 1

        interrupt_when(stuck(lambda: count[0]))
        with blocked_call():
            loop()


def request() -> None:
    with raw_server(READER) as (raw, t):
        got = threading.Event()
        threading.Thread(target=lambda: (raw.read_frame(10), got.set()), daemon=True).start()
        interrupt_when(got.is_set)
        with blocked_call():
            t.request(BinMessage(100, b"never answered"), timeout=30.0)


def recv() -> None:
    with raw_server(READER) as (raw, t):
        stream = t.stream(BinMessage(100, b"open"))
        frame = raw.read_frame(10)
        assert frame.kind == STREAM_START
        interrupt_when(stuck(lambda: 0))
        with blocked_call():
            for _ in stream:
                pass


def accept() -> None:
    with gofast.listen(("127.0.0.1", 0)) as lis:
        interrupt_when(stuck(lambda: 0))
        with blocked_call():
            lis.accept()  # nobody connects


CALLS: dict[str, Callable[[], None]] = {
    "accept": accept,
    "handshake": handshake,
    "post": lambda: flooded(lambda t: t.post(BinMessage(100, b"x" * 4096))),
    "post_many": lambda: flooded(lambda t: t.post_many([BinMessage(100, b"x" * 4096)] * 8)),
    "stream.send": lambda: flooded(_stream_send()),
    "request": request,
    "recv": recv,
}


def _stream_send() -> Callable[[gofast.Transport], None]:
    streams: dict[int, gofast.Stream] = {}

    def send(t: gofast.Transport) -> None:
        if id(t) not in streams:
            streams[id(t)] = t.stream(BinMessage(100, b"open"))
        streams[id(t)].send(BinMessage(100, b"x" * 4096))

    return send


def main() -> None:
    CALLS[sys.argv[1]]()


if __name__ == "__main__":
    main()
