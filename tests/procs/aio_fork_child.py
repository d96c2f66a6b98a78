"""Forks while a gofast.aio pair is up (tests/test_aio_fork.py runs it).

The parent makes the pair and opens a stream on its loop, then forks
between two runs of that loop (a pre-fork server's shape: asyncio does not
support a child that goes on running its parent's loop). The child runs a
loop of its own: every call on the inherited transports must raise
UsageError naming the fork, ``aclose()`` (and ``async with``) must return at
once as ``close()`` does, and a pair of its own must work; it exits through
sys.exit, so atexit handlers run. The parent then checks that its connection
survived. Usage: aio_fork_child.py [asyncio|uvloop]. Prints one JSON object
per process."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import gofast
import gofast.aio
from gofast import BinMessage


def echo(stream: Any, msg: BinMessage) -> BinMessage | None:
    return msg if stream is not None else None


def hold(stream: gofast.aio.Stream, msg: BinMessage) -> Callable[[Any], None]:
    return lambda m: None  # keeps the stream open


async def pair(name: str) -> tuple[gofast.aio.Transport, gofast.aio.Transport]:
    async with gofast.aio.listen(("127.0.0.1", 0)) as lis:
        accepted = asyncio.ensure_future(lis.accept(name=f"{name}-server", timeout=10))
        client = await gofast.aio.connect(lis.address, name=f"{name}-client")
        server = await accepted
    server.subscribe(100, echo).subscribe(101, hold)
    await asyncio.gather(client.handshake(10), server.handshake(10))
    return client, server


async def opened(client: gofast.aio.Transport) -> gofast.aio.Stream:
    return client.stream(BinMessage(101, b"open"))


async def child(
    client: gofast.aio.Transport, server: gofast.aio.Transport, stream: gofast.aio.Stream
) -> bool:
    refused = []
    calls: dict[str, Callable[[], Awaitable[object] | object]] = {
        "post": lambda: client.post(BinMessage(100, b"x")),
        "request": lambda: client.request(BinMessage(100, b"x"), timeout=1.0),
        "stream": lambda: client.stream(BinMessage(101, b"x")),
        "ping": lambda: client.ping("x"),
        "whoami": lambda: client.whoami(),
        "flush": lambda: client.flush(),
        "subscribe": lambda: client.subscribe(102, echo),
        "wait_closed": lambda: client.wait_closed(),
        "stream.send": lambda: stream.send(BinMessage(101, b"x")),
        "stream.recv": lambda: stream.recv(timeout=1.0),
    }
    for name, call in calls.items():
        try:
            async with asyncio.timeout(5):
                got = call()
                if isinstance(got, Awaitable):
                    await got
        except gofast.UsageError as e:
            if "parent process" in str(e):
                refused.append(name)
        except BaseException as e:  # reported: a wrong type, a hang
            print(f"{name}: {type(e).__name__}: {e}", file=sys.stderr)
    async with asyncio.timeout(5):
        await client.aclose()  # nothing to do here: the connection is the parent's
        async with server:
            pass
    own_client, own_server = await pair("child")
    async with own_client, own_server:
        own_ok = (await own_client.request(BinMessage(100, b"mine"), timeout=10)).data == b"mine"
    ok = sorted(refused) == sorted(calls) and own_ok
    print(json.dumps({"child_refused": sorted(refused), "child_own_pair": own_ok}), flush=True)
    return ok


def main() -> None:
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    if sys.argv[1:] == ["uvloop"]:
        import uvloop

        factory = uvloop.new_event_loop
    parent = os.getpid()
    # The parent's loop must never run, nor be closed, in the child.
    runner = asyncio.Runner(loop_factory=factory)
    try:
        client, server = runner.run(pair("parent"))
        stream = runner.run(opened(client))
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            with asyncio.Runner(loop_factory=factory) as own:
                ok = own.run(child(client, server, stream))
            sys.exit(0 if ok else 3)  # atexit handlers run: they must leave the parent's alone
        _, status = os.waitpid(pid, 0)

        async def after() -> dict[str, Any]:
            reply = await client.request(BinMessage(100, b"after fork"), timeout=10)
            await stream.send(BinMessage(101, b"still open"), flush=True)
            result = {
                "child_exit": os.waitstatus_to_exitcode(status),
                "parent_reply": bytes(reply.data).decode(),
                "parent_open": not client.closed and not server.closed,
            }
            await client.aclose()
            await server.aclose()
            return result

        print(json.dumps(runner.run(after())), flush=True)
    finally:
        if os.getpid() == parent:
            runner.close()


if __name__ == "__main__":
    main()
