"""gofast.aio writes a loop pass's frames together: the first send of a
pass goes out at once, the rest in one write when the pass ends, and a
pass the loop never finishes (the loop closed under it) still sends
everything it queued."""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import Any

import gofast
import gofast.aio
from conftest import APair
from gofast import BinMessage

POST_ID = 200
ECHO_ID = 300


async def test_a_pass_of_posts_goes_out_in_at_most_two_writes(apair: APair) -> None:
    got: list[bytes] = []
    apair.server.subscribe(POST_ID, lambda s, m: got.append(m.data))
    before = apair.client.stats()["n_flushes"]
    for i in range(50):  # no await suspends: one loop pass
        await apair.client.post(BinMessage(POST_ID, b"%d" % i))
    async with asyncio.timeout(10):
        while len(got) < 50:
            await asyncio.sleep(0.002)
    assert got == [b"%d" % i for i in range(50)], "all of them, in order"
    writes = apair.client.stats()["n_flushes"] - before
    assert writes <= 2, f"{writes} writes for one pass of 50 posts"


async def test_concurrent_requests_of_a_pass_share_writes(apair: APair) -> None:
    apair.server.subscribe(ECHO_ID, lambda s, m: m)
    before = apair.client.stats()["n_flushes"]
    replies = await asyncio.gather(
        *(apair.client.request(BinMessage(ECHO_ID, b"%d" % i)) for i in range(16))
    )
    assert [r.data for r in replies] == [b"%d" % i for i in range(16)]
    writes = apair.client.stats()["n_flushes"] - before
    assert writes <= 2, f"{writes} writes for 16 requests made in one pass"


def test_frames_of_a_pass_cut_short_by_the_loops_close_still_go_out() -> None:
    got: queue.Queue[bytes] = queue.Queue()
    servers: list[gofast.Transport] = []
    with gofast.listen(("127.0.0.1", 0)) as lis:

        def serve() -> None:
            t = lis.accept(name="sync-server")
            t.subscribe(POST_ID, lambda s, m: got.put(m.data))
            t.handshake()
            servers.append(t)

        accepting = threading.Thread(target=serve)
        accepting.start()
        loop = asyncio.new_event_loop()
        client: Any = None
        try:

            async def dial() -> gofast.aio.Transport:
                t = await gofast.aio.connect(lis.address, name="aio-client")
                await t.handshake()
                return t

            client = loop.run_until_complete(dial())
            accepting.join(timeout=10)

            def burst_then_stop() -> None:
                for i in range(5):
                    client.post(BinMessage(POST_ID, b"%d" % i))
                loop.stop()  # the pass's flush never runs on this loop

            loop.call_soon(burst_then_stop)
            loop.run_forever()
        finally:
            loop.close()
        try:
            assert [got.get(timeout=5) for _ in range(5)] == [b"%d" % i for i in range(5)]
        finally:
            if client is not None:
                client._t.close()
            for t in servers:
                t.close()
