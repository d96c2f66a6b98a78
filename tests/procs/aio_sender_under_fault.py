"""The process under test for tests/test_aio_peer_death.py: a gofast.aio
service whose peer is SIGKILLed mid-exchange.

Usage: aio_sender_under_fault.py MODE REPS LOOP (LOOP: asyncio or uvloop).
For each repetition it starts tests/procs/dying_peer.py, connects and
handshakes on the loop, then awaits in a loop while a thread SIGKILLs the
peer after a short random delay. MODE ``post``: 512 B POSTs; ``stream``:
sends on a stream it opened, while another task waits in its recv();
``respond``: its handler answers the peer's REQUESTs while it waits for the
answer to a request of its own, which never comes; ``request``: 100
requests and a stream recv in flight, none of which the peer answers. It
prints one JSON line per repetition: which errors the awaits got, and how
long after the kill the last one got its error. At the end it serves a new
client on the same loop (handshake and a request) and prints
``{"served": true}``.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gofast
import gofast.aio

PEER = Path(__file__).resolve().with_name("dying_peer.py")
DATA = gofast.BinMessage(100, b"x" * 512)


def echo(stream: Any, msg: gofast.BinMessage) -> gofast.BinMessage | None:
    return DATA if stream is not None else None


async def outcome(aw: Any) -> str:
    try:
        await aw
    except Exception as e:
        return type(e).__name__
    return "returned"


async def one_round(mode: str) -> dict[str, Any]:
    peer = await asyncio.create_subprocess_exec(
        sys.executable, str(PEER), mode, stdout=subprocess.PIPE
    )
    try:
        assert peer.stdout is not None
        port = int(await peer.stdout.readline())
        t = await gofast.aio.connect(("127.0.0.1", port), name=f"sender-{mode}")
        t.subscribe(100, echo)
        await t.handshake(10.0)
        killed_at: list[float] = []

        def kill() -> None:
            time.sleep(random.uniform(0.0, 0.02))
            killed_at.append(time.monotonic())
            os.kill(peer.pid, signal.SIGKILL)

        async def posting() -> None:
            while True:
                await t.post(DATA)

        async def sending(stream: gofast.aio.Stream) -> None:
            while True:
                await stream.send(DATA)

        awaits: list[Any] = []
        if mode == "post":
            awaits.append(posting())
        elif mode == "stream":
            stream = t.stream(DATA)
            awaits += [sending(stream), stream.recv()]
        elif mode == "respond":
            awaits.append(t.request(DATA, timeout=math.inf))
        else:
            awaits += [t.request(DATA, timeout=math.inf) for _ in range(100)]
            awaits.append(t.stream(DATA).recv())
        ended_at: list[float] = []

        async def timed(aw: Any) -> str:
            got = await outcome(aw)
            ended_at.append(time.monotonic())
            return got

        killer = threading.Thread(target=kill)
        killer.start()
        errors = await asyncio.gather(*(timed(a) for a in awaits))
        await asyncio.to_thread(killer.join)
        async with asyncio.timeout(10):
            await t.wait_closed()
        await t.aclose()
        return {
            "mode": mode,
            "errors": sorted(set(errors)),
            "after_kill": max(ended_at) - killed_at[0],
        }
    finally:
        if peer.returncode is None:
            peer.kill()
        await peer.wait()


async def serve_a_new_client() -> bool:
    async with gofast.aio.listen(("127.0.0.1", 0)) as lis:
        accepted = asyncio.ensure_future(lis.accept(name="late-server", timeout=10.0))
        client = await gofast.aio.connect(lis.address, name="late-client")
        server = await accepted
    server.subscribe(100, lambda stream, msg: msg)
    async with client, server:
        await asyncio.gather(client.handshake(10.0), server.handshake(10.0))
        reply = await client.request(gofast.BinMessage(100, b"still here"), timeout=10.0)
    return bytes(reply.data) == b"still here"


async def main(mode: str, reps: int) -> None:
    for _ in range(reps):
        print(json.dumps(await one_round(mode)), flush=True)
    print(json.dumps({"served": await serve_a_new_client()}), flush=True)


if __name__ == "__main__":
    mode, reps, loop = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main(mode, reps))
