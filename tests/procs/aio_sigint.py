"""Blocks in one gofast.aio await inside asyncio.run and gets SIGINT
(tests/test_aio_signals.py).

Usage: aio_sigint.py CALL LOOP. A raw peer plays along just enough to make
CALL wait (it never answers, or stops reading). Another thread sends SIGINT
once the call is known to be waiting; the script prints, as JSON, how long
after the signal asyncio.run() ended with KeyboardInterrupt."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gofast  # noqa: E402
import gofast.aio  # noqa: E402
from gofast import BinMessage  # noqa: E402
from wire import REQUEST, WHOAMI_ID, RawPeer  # noqa: E402

sent_at: list[float] = []


def interrupt_when(ready: Callable[[], bool]) -> None:
    def run() -> None:
        deadline = time.monotonic() + 20
        while not ready():
            if time.monotonic() > deadline:
                os._exit(4)
            time.sleep(0.005)
        time.sleep(0.1)  # well inside the wait
        sent_at.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=run, daemon=True).start()


async def with_raw_peer(
    settings: dict[str, Any] | None, then: Callable[[gofast.aio.Transport, RawPeer], Any]
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as lis:
        t = await gofast.aio.connect(lis.getsockname()[:2], settings=settings)
        conn, _ = await asyncio.to_thread(lis.accept)
        raw = RawPeer(conn)
        await then(t, raw)


async def handshake() -> None:
    async def go(t: gofast.aio.Transport, raw: RawPeer) -> None:
        got = threading.Event()

        def read_whoami() -> None:
            frame = raw.read_frame(10)
            assert frame.kind == REQUEST and frame.id == WHOAMI_ID
            got.set()

        threading.Thread(target=read_whoami, daemon=True).start()
        interrupt_when(got.is_set)
        await t.handshake(30.0)  # the raw peer never answers

    await with_raw_peer(None, go)


async def shaken(
    settings: dict[str, Any] | None, then: Callable[[gofast.aio.Transport, RawPeer], Any]
) -> None:
    async def go(t: gofast.aio.Transport, raw: RawPeer) -> None:
        shim = _Shim(t, asyncio.get_running_loop())
        await asyncio.to_thread(raw.handshake, shim)
        await then(t, raw)

    await with_raw_peer(settings, go)


class _Shim:
    """What RawPeer.handshake calls on its thread, run on the loop."""

    def __init__(self, t: gofast.aio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.t, self.loop = t, loop

    def handshake(self, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(self.t.handshake(timeout), self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.t.close)


async def request() -> None:
    async def go(t: gofast.aio.Transport, raw: RawPeer) -> None:
        got = threading.Event()
        threading.Thread(target=lambda: (raw.read_frame(10), got.set()), daemon=True).start()
        interrupt_when(got.is_set)
        await t.request(BinMessage(100, b"never answered"), timeout=30.0)

    await shaken(None, go)


async def post() -> None:
    async def go(t: gofast.aio.Transport, raw: RawPeer) -> None:
        sent = [0, time.monotonic()]

        def stuck() -> bool:
            return time.monotonic() - sent[1] > 0.3

        interrupt_when(stuck)
        while True:  # the raw peer never reads
            await t.post(BinMessage(100, b"x" * 4096))
            sent[:] = [sent[0] + 1, time.monotonic()]

    await shaken({"pending.max": 64 * 1024}, go)


async def recv() -> None:
    async def go(t: gofast.aio.Transport, raw: RawPeer) -> None:
        s = t.stream(BinMessage(100, b"open"))
        await asyncio.to_thread(raw.read_frame, 10)
        interrupt_when(lambda: True)
        async for _ in s:
            pass

    await shaken(None, go)


async def accept() -> None:
    lis = gofast.aio.listen(("127.0.0.1", 0))
    interrupt_when(lambda: True)
    await lis.accept()  # nobody connects


CALLS: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
    "handshake": handshake,
    "request": request,
    "post": post,
    "recv": recv,
    "accept": accept,
}


def main() -> None:
    call, loop = sys.argv[1], sys.argv[2]
    factory = asyncio.new_event_loop
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(CALLS[call]())
    except KeyboardInterrupt:
        print(json.dumps({"after_signal": time.monotonic() - sent_at[0]}), flush=True)
        return
    print(json.dumps({"error": "the call returned"}), flush=True)


if __name__ == "__main__":
    main()
