"""The async twin of test_backpressure.py (test_aio_lifecycle.py shows the
loop stays free while a post waits for room): a peer that stops reading
makes ``await post()`` wait once ``pending.max`` bytes are queued, instead
of queueing without bound, and nothing is lost nor reordered when it reads
again; the same for a slow reader (posts, stream messages, requests) over
every link, and for a loop that falls behind on the reading side, which
slows its peer down instead of queueing without bound."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import gofast
import gofast.aio
import wire
from aio_wire import araw_server, resume_loop_taking, stop_loop_taking, until
from conftest import APair
from gofast import BinMessage

POST_ID = 100
STREAM_ID = 101
ECHO_ID = 102
SIZE = 64 * 1024

Factory = Callable[..., Awaitable[APair]]


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def numbered(i: int, size: int = SIZE) -> bytes:
    return i.to_bytes(4, "big") * (size // 4)


async def test_post_waits_while_the_peer_does_not_read_and_loses_nothing() -> None:
    count = 2000  # 128 MiB: far more than loopback socket buffers hold
    async with araw_server({"pending.max": 256 * 1024}) as (raw, t):
        done = 0

        async def poster() -> None:
            nonlocal done
            for i in range(count):
                await t.post(BinMessage(POST_ID, numbered(i)))
                done += 1

        before = rss_kib()
        posting = asyncio.ensure_future(poster())
        await until(lambda: done > 10, what="posting starts")
        finished, _ = await asyncio.wait([posting], timeout=1.0)
        assert not finished, "128 MiB of posts went through a peer that reads nothing"
        assert done < count
        grown_mib = (rss_kib() - before) / 1024
        assert grown_mib < 48, f"queued {grown_mib:.0f} MiB for a peer that does not read"

        for i in range(count):
            frame = await raw.read_frame(timeout=10)
            assert (frame.kind, frame.message.id) == (wire.POST, POST_ID)
            assert frame.message.data == numbered(i)
        async with asyncio.timeout(10):
            await posting
        assert t.stats()["n_txpost"] == count


class SlowReader:
    """A sync server's handlers, on its reader thread: it falls behind now
    and then (as one busy with other work), so the sender has to wait."""

    def __init__(self) -> None:
        self.got: list[int] = []

    def take(self, data: bytes) -> None:
        self.got.append(int.from_bytes(data[:4], "big"))
        if len(self.got) % 100 == 0:
            time.sleep(0.005)

    def on_post(self, stream: Any, msg: BinMessage) -> None:
        self.take(msg.data)

    def on_stream(self, stream: Any, msg: BinMessage) -> Callable[[Any], None]:
        return lambda m: None if m is None else self.take(m.data)

    def on_request(self, stream: Any, msg: BinMessage) -> None:
        self.take(msg.data)
        stream.respond(msg)


@pytest.mark.parametrize("what", ["post", "stream", "request"])
async def test_a_slow_reader_gets_everything_in_order(apair_factory: Factory, what: str) -> None:
    n, size = 2000, 16 * 1024  # 32 MiB through a 64 KiB send queue
    reader = SlowReader()

    def setup(t: gofast.Transport) -> None:
        t.subscribe(POST_ID, reader.on_post)
        t.subscribe(STREAM_ID, reader.on_stream)
        t.subscribe(ECHO_ID, reader.on_request)

    p = await apair_factory(
        sync="server", server_setup=setup, client_settings={"pending.max": 64 * 1024}
    )
    c: gofast.aio.Transport = p.client
    if what == "post":
        for i in range(n):
            await c.post(BinMessage(POST_ID, numbered(i, size)))
        c.flush()
    elif what == "stream":
        async with c.stream(BinMessage(STREAM_ID, b"")) as s:
            for i in range(n):
                await s.send(BinMessage(STREAM_ID, numbered(i, size)))
    else:
        # In flight together, each from a task of its own: every one gets
        # its own reply (tasks waiting for room have no order among them).
        replies = await asyncio.gather(
            *(c.request(BinMessage(ECHO_ID, numbered(i, size))) for i in range(n))
        )
        assert [r.data for r in replies] == [numbered(i, size) for i in range(n)]
    await until(lambda: len(reader.got) >= n, timeout=30, what=f"all {n} messages arriving")
    assert (sorted(reader.got) if what == "request" else reader.got) == list(range(n))


async def test_a_loop_that_falls_behind_slows_its_peer_and_loses_nothing(
    apair_factory: Factory,
) -> None:
    count = 1000  # 64 MiB
    got: list[int] = []
    p = await apair_factory(
        sync="client",
        client_settings={"pending.max": 256 * 1024},
        server_settings={"pending.max": 256 * 1024},
        server_setup=lambda t: t.subscribe(
            POST_ID, lambda s, m: got.append(int.from_bytes(m.data[:4], "big"))
        ),
    )
    server: gofast.aio.Transport = p.server
    stop_loop_taking(server)  # the loop is busy elsewhere: it takes nothing
    done = [0]

    def poster() -> None:
        for i in range(count):
            p.client.post(BinMessage(POST_ID, numbered(i)))
            done[0] += 1
        p.client.flush()

    before = rss_kib()
    thread = threading.Thread(target=poster)
    try:
        thread.start()
        await until(lambda: done[0] > 0, what="posting starts")
        await asyncio.to_thread(thread.join, 1.0)
        assert thread.is_alive(), "64 MiB went to a loop that takes nothing"
        assert done[0] < count
        grown_mib = (rss_kib() - before) / 1024
        assert grown_mib < 48, f"queued {grown_mib:.0f} MiB for a loop that takes nothing"
    finally:
        resume_loop_taking(server)
    await until(lambda: len(got) == count, timeout=30, what="every post arriving")
    await asyncio.to_thread(thread.join, 10)
    assert not thread.is_alive()
    assert got == list(range(count))
