"""Per-call cost of post(), request() and a Python handler, in microseconds.

The bare figures (64-byte BinMessage, empty handler) are the module's own
overhead; the ``_cbor`` ones add what a typical call also does (a small
CborMessage encoded by post(), decoded by the handler).

    python benches/per_call.py [--rounds 5] [--json]

Used to compare builds of the native module (abi3 against version-specific,
docs/performance.md): run it in one venv per build, alternately, on the same
machine. Each figure is the best of ``--rounds`` rounds, which is the least
disturbed by the other work on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import gofast

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from conftest import make_pair  # noqa: E402

POST_ID, ECHO_ID, COUNT_ID, NOTE_ID = 100, 101, 102, 103


@dataclass
class Note(gofast.CborMessage, id=NOTE_ID):
    seq: int
    text: str


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=20_000, help="calls per round")
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    args = ap.parse_args()

    counted = 0
    target = 0
    done = threading.Event()

    def count(_s: object, _m: object) -> None:
        nonlocal counted
        counted += 1
        if counted == target:
            done.set()

    def count_note(_s: object, m: gofast.BinMessage) -> None:
        m.decode(Note)
        count(_s, m)

    def server(t: gofast.Transport) -> None:
        t.subscribe(POST_ID, lambda s, m: None)
        t.subscribe(ECHO_ID, lambda s, m: s.respond(m) if s is not None else None)
        t.subscribe(COUNT_ID, count)
        t.subscribe(NOTE_ID, count_note)

    pair = make_pair(server_setup=server)
    msg = gofast.BinMessage(POST_ID, b"x" * 64)
    echo = gofast.BinMessage(ECHO_ID, b"x" * 64)
    note = Note(1, "hello")
    batches = {
        "handler": [gofast.BinMessage(COUNT_ID, b"x" * 64)] * 1000,
        "handler_cbor": [note] * 1000,
    }
    names = ("post", "post_cbor", "request", "handler", "handler_cbor")
    best = dict.fromkeys(names, float("inf"))
    try:
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            for _ in range(args.n):
                pair.client.post(msg)
            best["post"] = min(best["post"], (time.perf_counter() - t0) / args.n)

            t0 = time.perf_counter()
            for _ in range(args.n):
                pair.client.post(note)
            best["post_cbor"] = min(best["post_cbor"], (time.perf_counter() - t0) / args.n)

            n = args.n // 4
            t0 = time.perf_counter()
            for _ in range(n):
                pair.client.request(echo)
            best["request"] = min(best["request"], (time.perf_counter() - t0) / n)

            # Handler calls: a batch posted at once, timed until the server's
            # handler has run for every message (the reader thread's loop).
            for name, batch in batches.items():
                counted, target = 0, len(batch) * 10
                done.clear()
                t0 = time.perf_counter()
                for _ in range(10):
                    pair.client.post_many(batch)
                if not done.wait(60):
                    raise SystemExit("handler calls did not all arrive within 60 s")
                best[name] = min(best[name], (time.perf_counter() - t0) / target)
    finally:
        pair.close()
    us = {k: round(v * 1e6, 3) for k, v in best.items()}
    if args.json:
        print(json.dumps(us))
    else:
        for k, v in us.items():
            print(f"{k:12} {v:8.3f} us/call")


if __name__ == "__main__":
    main()
