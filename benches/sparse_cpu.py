"""CPU per POST when messages are sparse: what the reader's polling of a quiet
socket (src/transport/idle_spin.rs) costs a connection that is not busy.

    python benches/sparse_cpu.py            # gaps of 1 ms, 100 us, 20 us

One process, a connected pair on 127.0.0.1, one POST per gap for 2 s; prints
the process's CPU time per POST (both ends, and the sending loop itself).
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import gofast

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from conftest import make_pair  # noqa: E402

GAPS_S = (1e-3, 1e-4, 2e-5)
SECONDS = 2.0


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    got = [0]
    pair = make_pair(
        server_setup=lambda t: t.subscribe(100, lambda _s, _m: got.__setitem__(0, got[0] + 1))
    )
    msg = gofast.BinMessage(100, b"x" * 64)
    try:
        for gap in GAPS_S:
            before, began, n = cpu_s(), time.perf_counter(), 0
            while time.perf_counter() - began < SECONDS:
                pair.client.post(msg, flush=True)
                n += 1
                time.sleep(gap)
            used = cpu_s() - before
            print(f"gap {gap * 1e6:6.0f} us: {n:6,} posts, {used / n * 1e6:5.1f} us CPU per post")
    finally:
        pair.close()


if __name__ == "__main__":
    main()
