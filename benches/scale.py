"""Many transports in one process: 500 connections (1,000 transports, both
ends here), each client doing one request, then the process's thread count
and RSS per transport.

    python benches/scale.py [--connections 500]
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor

import gofast

ECHO_ID = 100


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--connections", type=int, default=500)
    args = ap.parse_args()
    n = args.connections
    before_rss, before_threads = rss_kib(), threads()
    start = time.perf_counter()
    clients: list[gofast.Transport] = []
    servers: list[gofast.Transport] = []
    with gofast.listen(("127.0.0.1", 0), backlog=n) as lis, ThreadPoolExecutor(8) as pool:
        for _ in range(n):
            accepted = pool.submit(lis.accept, name="scale-server", timeout=30)
            clients.append(gofast.Transport.connect(lis.address, name="scale-client"))
            server = accepted.result(timeout=30)
            server.subscribe(ECHO_ID, lambda s, m: s.respond(m) if s is not None else None)
            servers.append(server)
            shaken = pool.submit(server.handshake)
            clients[-1].handshake()
            shaken.result(timeout=30)
        setup = time.perf_counter() - start
        start = time.perf_counter()
        msg = gofast.BinMessage(ECHO_ID, b"ping")
        replies = list(pool.map(lambda t: t.request(msg), clients))
        round_trips = time.perf_counter() - start
    assert all(r == msg for r in replies)
    rss, nthreads = rss_kib(), threads()
    transports = 2 * n
    print(f"{transports} transports ({n} connections) in one process")
    print(f"  set up (connect + handshake): {setup:.2f} s")
    print(f"  one request on each client:  {round_trips * 1000:.1f} ms for {n} requests")
    print(f"  threads: {nthreads} ({(nthreads - before_threads) / transports:.1f} per transport)")
    per = (rss - before_rss) / transports
    print(f"  RSS: {rss / 1024:.1f} MiB ({per:.1f} KiB per transport)")
    start = time.perf_counter()
    for t in clients + servers:
        t.close()
    print(f"  close all: {time.perf_counter() - start:.2f} s; threads after: {threads()}")


if __name__ == "__main__":
    main()
