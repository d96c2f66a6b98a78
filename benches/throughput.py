"""Two-process throughput of gofast for Python on 127.0.0.1.

Workloads (64-byte payloads unless --size says otherwise):
  post       one-way POSTs, client -> server handler
  stream     one STREAM carrying N messages server -> client callback
  request    sequential REQUEST/RESPONSE round trips
  request16  16 client threads doing requests at once
  post_many     POSTs handed over 1,000 per call
  post_batched  the same, into a server handler that takes lists (subscribe_batch)
  request_many  requests pipelined 100 per call (request_many)
Each is printed as messages/s beside a baseline measured in the same run:
plain Python blocking sockets with 4-byte length prefixes (one-way, and
request/response), so the ratio means something on a noisy machine.

    python benches/throughput.py            # all workloads
    python benches/throughput.py --quick    # short run
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import struct
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import gofast

POST_ID, COUNT_ID, STREAM_ID, ECHO_ID, BATCH_ID = 100, 101, 102, 103, 104


# ---- gofast server process -------------------------------------------------------


def gofast_server(port_q: Any, size: int, settings: dict[str, Any]) -> None:
    with gofast.listen(("127.0.0.1", 0)) as lis:
        port_q.put(lis.address[1])
        t = lis.accept(name="bench-server", settings=settings)
    count = [0]
    payload = gofast.BinMessage(STREAM_ID, b"s" * size)

    def on_post(_s: Any, _m: gofast.BinMessage) -> None:
        count[0] += 1

    def on_count(s: Any, _m: gofast.BinMessage) -> None:
        s.respond(gofast.BinMessage(COUNT_ID, str(count[0]).encode()))
        count[0] = 0

    def on_echo(s: Any, m: gofast.BinMessage) -> None:
        s.respond(m)

    def on_stream(s: Any, m: gofast.BinMessage) -> Any:
        n = int(m.data)

        def pump() -> None:
            for _ in range(n):
                s.send(payload)
            s.close()

        threading.Thread(target=pump).start()
        return lambda _msg: None

    def on_batch(msgs: list[gofast.BinMessage]) -> None:
        count[0] += len(msgs)

    t.subscribe(POST_ID, on_post).subscribe(COUNT_ID, on_count)
    t.subscribe_batch(BATCH_ID, on_batch)
    t.subscribe(ECHO_ID, on_echo).subscribe(STREAM_ID, on_stream)
    done = threading.Event()
    t.subscribe(999, lambda s, m: (s.respond(m), done.set()))
    t.handshake()
    done.wait()
    t.close()


def run_gofast(
    n: int, size: int, workloads: list[str], settings: dict[str, Any]
) -> dict[str, float]:
    q: Any = mp.Queue()
    proc = mp.Process(target=gofast_server, args=(q, size, settings))
    proc.start()
    port = q.get(timeout=30)
    t = gofast.Transport.connect(("127.0.0.1", port), name="bench-client", settings=settings)
    t.handshake()
    results: dict[str, float] = {}
    msg = gofast.BinMessage(POST_ID, b"p" * size)
    try:
        if "post" in workloads:
            start = time.perf_counter()
            for _ in range(n):
                t.post(msg)
            got = int(t.request(gofast.BinMessage(COUNT_ID, b"")).data)
            results["post"] = got / (time.perf_counter() - start)
            assert got == n, (got, n)
        if "post_many" in workloads:
            batch = [msg] * 1000
            start = time.perf_counter()
            for _ in range(n // 1000):
                t.post_many(batch)
            got = int(t.request(gofast.BinMessage(COUNT_ID, b"")).data)
            results["post_many"] = got / (time.perf_counter() - start)
        if "post_batched" in workloads:
            batch = [gofast.BinMessage(BATCH_ID, b"p" * size)] * 1000
            start = time.perf_counter()
            for _ in range(n // 1000):
                t.post_many(batch)
            got = int(t.request(gofast.BinMessage(COUNT_ID, b"")).data)
            results["post_batched"] = got / (time.perf_counter() - start)
        if "stream" in workloads:
            finished = threading.Event()
            received = [0]

            def on_msg(m: gofast.BinMessage | None) -> None:
                if m is None:
                    finished.set()
                else:
                    received[0] += 1

            start = time.perf_counter()
            s = t.stream(gofast.BinMessage(STREAM_ID, str(n).encode()), on_msg)
            finished.wait(120)
            results["stream"] = received[0] / (time.perf_counter() - start)
            s.close()
        echo = gofast.BinMessage(ECHO_ID, b"r" * size)
        reqs = max(n // 20, 1000)
        if "request" in workloads:
            start = time.perf_counter()
            for _ in range(reqs):
                t.request(echo)
            results["request"] = reqs / (time.perf_counter() - start)
        if "request16" in workloads:
            per = max(reqs // 16, 100)

            def worker(_i: int) -> None:
                for _ in range(per):
                    t.request(echo)

            start = time.perf_counter()
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(worker, range(16)))
            results["request16"] = per * 16 / (time.perf_counter() - start)
        if "request_many" in workloads:
            batch = [echo] * 100
            start = time.perf_counter()
            for _ in range(reqs // 100):
                t.request_many(batch)
            results["request_many"] = reqs // 100 * 100 / (time.perf_counter() - start)
        results["client_stats"] = t.stats()  # type: ignore[assignment]
        t.request(gofast.BinMessage(999, b""))
    finally:
        t.close()
        proc.join(30)
    return results


# ---- baseline: plain blocking sockets, length-prefixed --------------------------


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return bytes(buf)


def raw_server(port_q: Any) -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    port_q.put(srv.getsockname()[1])
    conn, _ = srv.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = conn.makefile("rb", buffering=65536)
    count = 0
    while True:
        head = reader.read(5)
        if len(head) < 5:
            return
        kind, length = head[0], struct.unpack(">I", head[1:])[0]
        body = reader.read(length)
        if kind == 0:  # one-way
            count += 1
        elif kind == 1:  # count query
            conn.sendall(b"\x01" + struct.pack(">I", 8) + struct.pack(">Q", count))
            count = 0
        else:  # echo
            conn.sendall(head + body)


def run_baseline(n: int, size: int, workloads: list[str]) -> dict[str, float]:
    q: Any = mp.Queue()
    proc = mp.Process(target=raw_server, args=(q,))
    proc.start()
    sock = socket.create_connection(("127.0.0.1", q.get(timeout=30)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    results: dict[str, float] = {}
    payload = b"p" * size
    frame = b"\x00" + struct.pack(">I", size) + payload
    out = sock.makefile("wb", buffering=65536)
    if "post" in workloads:
        start = time.perf_counter()
        for _ in range(n):
            out.write(frame)
        out.write(b"\x01" + struct.pack(">I", 0))
        out.flush()
        got = struct.unpack(">Q", _recv_exact(sock, 13)[5:])[0]
        results["post"] = got / (time.perf_counter() - start)
    if "request" in workloads:
        reqs = max(n // 20, 1000)
        echo = b"\x02" + struct.pack(">I", size) + payload
        start = time.perf_counter()
        for _ in range(reqs):
            sock.sendall(echo)
            _recv_exact(sock, len(echo))
        results["request"] = reqs / (time.perf_counter() - start)
    out.close()  # the file object holds the socket open too
    sock.close()
    proc.join(30)
    return results


def idle_transport_kib(count: int = 200) -> float:
    """RSS growth per idle, handshaken transport (both ends in this process)."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    from conftest import make_pair

    def rss_kib() -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    warm = [make_pair() for _ in range(10)]
    before = rss_kib()
    pairs = [make_pair() for _ in range(count // 2)]
    after = rss_kib()
    for p in pairs + warm:
        p.close()
    return (after - before) / count


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="100k messages instead of 1M")
    ap.add_argument("-n", type=int, default=None, help="messages per one-way workload")
    ap.add_argument("--size", type=int, default=64, help="payload bytes")
    ap.add_argument(
        "--workloads", default="post,post_many,post_batched,stream,request,request16,request_many"
    )
    ap.add_argument("--batchsize", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    n = args.n or (100_000 if args.quick else 1_000_000)
    workloads = args.workloads.split(",")
    settings = {"batchsize": args.batchsize}
    ours = run_gofast(n, args.size, workloads, settings)
    base = run_baseline(n, args.size, workloads)
    idle = idle_transport_kib()
    stats = ours.pop("client_stats")
    if args.json:
        print(
            json.dumps(
                {"gofast": ours, "baseline": base, "idle_kib": idle, "n": n, "size": args.size}
            )
        )
        return
    print(f"gofast-python throughput, {args.size}-byte payloads, n={n}, cores={os.cpu_count()}")
    print(f"{'workload':<12}{'gofast msg/s':>14}{'raw-socket msg/s':>18}{'ratio':>8}")
    for w in workloads:
        if w not in ours:
            continue
        b = base.get(w) or base.get("post" if w.startswith("post") else "")
        ratio = f"{ours[w] / b:.2f}" if b else "-"
        print(f"{w:<12}{ours[w]:>14,.0f}{(b or 0):>18,.0f}{ratio:>8}")
    print(f"idle transport: {idle:.1f} KiB RSS each")
    print("client stats:", {k: v for k, v in stats.items() if v})  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
