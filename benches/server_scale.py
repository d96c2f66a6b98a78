"""How one gofast.Server holds up as connections grow (issue 12's scale bench).

    python benches/server_scale.py                    # 1, 10, 100, 1000 connections
    python benches/server_scale.py --connections 1,10 --seconds 2
    python benches/server_scale.py --reader thread     # one reader mode only

The server is its own process (an echo handler on a gofast.Server). For each
level N, CLIENTS client processes open N connections between them and keep
THREADS requester threads each, every thread going round its share of the
connections, for SECONDS. It prints requests/s, p50/p99 latency and, read
from /proc while the load runs, the server's threads, fds and RSS, plus the
throughput as a share of the best level's. Everything runs on 127.0.0.1; every
process started is stopped by pid.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ECHO_ID = 100


def serve(reader: str) -> None:
    import gofast

    settings = {"opaque.start": 30_000, "opaque.end": 39_999, "reader": reader}
    server = gofast.Server(("127.0.0.1", 0), max_connections=100_000, settings=settings)
    server.subscribe(ECHO_ID, lambda stream, msg: stream.respond(msg))
    server.start()
    print(json.dumps({"port": server.address[1]}), flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    server.stop(grace=0)


def client(port: int, connections: int, threads: int, seconds: float, reader: str) -> None:
    import gofast

    transports = []
    for i in range(connections):
        t = gofast.Transport.connect(("127.0.0.1", port), name=f"c{i}", settings={"reader": reader})
        t.handshake(30.0)
        transports.append(t)
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()  # the parent says go once every client is connected
    msg = gofast.BinMessage(ECHO_ID, b"x" * 64)
    latencies: list[list[float]] = [[] for _ in range(threads)]
    stop_at = time.monotonic() + seconds

    def run(k: int) -> None:
        mine = transports[k::threads] or transports[k % len(transports) :][:1]
        lat = latencies[k]
        i = 0
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            mine[i % len(mine)].request(msg, timeout=30.0)
            lat.append(time.perf_counter() - t0)
            i += 1

    workers = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    flat = sorted(x for lat in latencies for x in lat)
    print(json.dumps({"requests": len(flat), "latencies": flat[:: max(1, len(flat) // 2000)]}))
    for t in transports:
        t.close()


def proc_status(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "threads": int(fields["Threads"]),
        "rss_kib": int(fields["VmRSS"].split()[0]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def level(
    port: int, server_pid: int, n: int, reader: str, args: argparse.Namespace
) -> dict[str, Any]:
    procs = min(args.clients, n)
    shares = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
    clients = [
        subprocess.Popen(
            [sys.executable, str(HERE), "client", str(port), str(share), str(args.threads)]
            + [str(args.seconds), reader],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for share in shares
    ]
    try:
        for c in clients:
            assert c.stdout is not None
            json.loads(c.stdout.readline())  # connected and handshaken
        t0 = time.monotonic()
        for c in clients:
            assert c.stdin is not None
            c.stdin.write("go\n")
            c.stdin.flush()
        # Read the server's cost mid-run, while every connection is busy.
        time.sleep(args.seconds / 2)
        cost = proc_status(server_pid)
        results = [json.loads(c.communicate(timeout=args.seconds + 120)[0]) for c in clients]
        elapsed = time.monotonic() - t0
    finally:
        for c in clients:
            c.kill()
            c.wait()
    total = sum(r["requests"] for r in results)
    lat = sorted(x for r in results for x in r["latencies"])
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1e6 if lat else 0.0  # noqa: E731
    return {
        "reader": reader,
        "connections": n,
        "requests_per_s": total / elapsed,
        "p50_us": pick(0.50),
        "p99_us": pick(0.99),
        **cost,
    }


def curve(reader: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every level against one server process of this reader mode."""
    server = subprocess.Popen(
        [sys.executable, str(HERE), "server", reader],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = json.loads(server.stdout.readline())["port"]
        idle = proc_status(server.pid)
        print(f"reader {reader}: server pid {server.pid}, idle: {idle}", flush=True)
        levels = [int(n) for n in args.connections.split(",")]
        return [level(port, server.pid, n, reader, args) for n in levels]
    finally:
        server.kill()
        server.wait()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "server":
        return serve(sys.argv[2])
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        port, conns, threads, seconds, reader = sys.argv[2:7]
        return client(int(port), int(conns), int(threads), float(seconds), reader)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connections", default="1,10,100,1000", help="levels, comma-separated")
    ap.add_argument("--clients", type=int, default=4, help="client processes (at most N)")
    ap.add_argument("--threads", type=int, default=8, help="requester threads per client")
    ap.add_argument("--seconds", type=float, default=4.0, help="load per level")
    ap.add_argument(
        "--reader", default="thread,shared", help="reader modes, comma-separated: thread, shared"
    )
    args = ap.parse_args()
    rows = [r for reader in args.reader.split(",") for r in curve(reader, args)]
    print(
        f"{'reader':>7} {'conns':>6} {'req/s':>9} {'of best':>8} {'p50 us':>8} {'p99 us':>8} "
        f"{'threads':>8} {'fds':>6} {'RSS MiB':>8}"
    )
    best = max(x["requests_per_s"] for x in rows)
    for r in rows:
        print(
            f"{r['reader']:>7} {r['connections']:>6} {r['requests_per_s']:>9,.0f} "
            f"{r['requests_per_s'] / best:>8.2f} "
            f"{r['p50_us']:>8.0f} {r['p99_us']:>8.0f} {r['threads']:>8} {r['fds']:>6} "
            f"{r['rss_kib'] / 1024:>8.1f}"
        )


if __name__ == "__main__":
    main()
