"""close(), or the peer closing, lets go of the socket, the threads and the
buffers at once; a closed transport that stays referenced keeps only what
its stats need."""

from __future__ import annotations

import os
from typing import Any

from conftest import make_pair, wait_until
from gofast import BinMessage


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


def rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def echo(t: Any) -> None:
    t.subscribe(100, lambda stream, msg: stream.respond(msg))


def test_a_closed_transport_holds_no_fd_nor_thread() -> None:
    base_fds, base_threads = fds(), threads()
    p = make_pair(server_setup=echo)
    assert p.client.request(BinMessage(100, b"x"), timeout=10).data == b"x"
    assert fds() == base_fds + 2, "one fd per transport"
    p.client.close()  # the server's transport ends because its peer did
    wait_until(lambda: p.server.closed, what="the server seeing the close")
    wait_until(lambda: fds() == base_fds, what="both sockets released")
    wait_until(lambda: threads() == base_threads, what="all four threads gone")
    assert p.client.stats()["n_txreq"] == 2, "counters stay readable (whoami + ours)"


def test_a_thousand_closed_transports_kept_referenced_cost_little() -> None:
    kept = []
    payload = BinMessage(100, b"p" * 4096)
    warm = make_pair(server_setup=echo)
    warm.client.request(payload, timeout=10)
    warm.close()
    base_fds, base_threads, base_rss = fds(), threads(), rss_kib()
    for _ in range(500):
        p = make_pair(server_setup=echo)
        # Some traffic, so buffers and the compressor state really exist.
        p.client.request(payload, timeout=10)
        p.client.post_many([payload] * 4)
        p.close()
        kept.append(p)
    assert fds() == base_fds
    wait_until(lambda: threads() == base_threads, what="every transport's threads gone")
    grown = rss_kib() - base_rss
    # 1,000 open transports with traffic take ~100+ MiB; closed ones almost nothing.
    assert grown < 16 * 1024, f"1,000 closed transports kept {grown} KiB"
    assert all(p.client.stats()["n_txreq"] == 2 for p in kept)


def test_fd_limit_does_not_fill_with_closed_transports() -> None:
    """The README's server keeps its transports: with closed ones holding
    their sockets, accept() ran out of fds after 62 connections at 128."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    kept = []
    limit = fds() + 40
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        for _ in range(100):  # 200 transports through a budget of 40 fds
            p = make_pair()
            p.close()
            kept.append(p)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert len(kept) == 100
