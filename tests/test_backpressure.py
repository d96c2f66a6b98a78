"""A peer that stops reading: senders block once `pending.max` bytes are
queued (beyond what the kernel buffers), instead of queueing without bound;
nothing is lost when the peer reads again."""

from __future__ import annotations

import threading

import gofast
import wire
from conftest import wait_until

SIZE = 64 * 1024
COUNT = 2000  # 128 MiB: far more than loopback socket buffers hold


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_post_blocks_while_the_peer_does_not_read_and_loses_nothing() -> None:
    settings = {"pending.max": 256 * 1024}
    with wire.raw_server(settings) as (raw, transport):
        done = [0]
        failed: list[BaseException] = []

        def poster() -> None:
            try:
                for i in range(COUNT):
                    transport.post(gofast.BinMessage(100, i.to_bytes(4, "big") * (SIZE // 4)))
                    done[0] += 1
            except BaseException as e:  # reported by the test thread
                failed.append(e)

        before = rss_kib()
        thread = threading.Thread(target=poster)
        thread.start()
        wait_until(lambda: done[0] > 10, what="posting starts")
        thread.join(timeout=2.0)
        assert thread.is_alive(), "128 MiB of posts went through a peer that reads nothing"
        assert done[0] < COUNT
        grown_mib = (rss_kib() - before) / 1024
        assert grown_mib < 48, f"queued {grown_mib:.0f} MiB for a peer that does not read"

        for i in range(COUNT):
            frame = raw.read_frame(timeout=10)
            msg = frame.message
            assert (frame.kind, msg.id) == (wire.POST, 100)
            assert msg.data == i.to_bytes(4, "big") * (SIZE // 4)
        thread.join(timeout=10)
        assert not thread.is_alive() and not failed
        assert transport.stats()["n_txpost"] == COUNT
