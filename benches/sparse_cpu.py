"""CPU per message when messages are sparse: what the reader's polling of a
quiet socket (src/transport/idle_spin.rs) costs a connection that is not busy.

    python benches/sparse_cpu.py            # gaps of 1 ms, 100 us, 20 us

One process, a connected pair on 127.0.0.1, one POST (then one REQUEST) per
gap for 2 s each; prints the process's CPU time per message (both ends, and
the sending loop itself).
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
    def server(t: gofast.Transport) -> None:
        t.subscribe(100, lambda _s, _m: None)
        t.subscribe(101, lambda s, m: s.respond(m))

    pair = make_pair(server_setup=server)
    post = gofast.BinMessage(100, b"x" * 64)
    request = gofast.BinMessage(101, b"x" * 64)
    sends = {
        "POST": lambda: pair.client.post(post, flush=True),
        "REQUEST": lambda: pair.client.request(request),
    }
    try:
        for what, send in sends.items():
            for gap in GAPS_S:
                before, began, n = cpu_s(), time.perf_counter(), 0
                while time.perf_counter() - began < SECONDS:
                    send()
                    n += 1
                    time.sleep(gap)
                per = (cpu_s() - before) / n * 1e6
                print(f"{what:<8} gap {gap * 1e6:6.0f} us: {n:6,} sent, {per:5.1f} us CPU each")
    finally:
        pair.close()


if __name__ == "__main__":
    main()
