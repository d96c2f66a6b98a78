"""Small helpers shared by the system modules: thread fan-out and timing.

Kept free of any system's library so importing it costs nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..spec import CellError, Outcome

_KEPT: list[object] = []


def keep_alive(obj: object) -> None:
    """Holds a server's objects for the life of the process: some libraries stop
    serving when theirs are garbage collected (grpc.Server, gofast.Transport)."""
    _KEPT.append(obj)


def split(total: int, parts: int) -> list[int]:
    """``total`` requests shared out over ``parts`` requesters, as evenly as can be."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def timed_requests(n: int, one: Callable[[], object]) -> list[int]:
    """Runs ``one()`` n times, timing each call in nanoseconds."""
    lat = [0] * n
    for i in range(n):
        t0 = time.perf_counter_ns()
        one()
        lat[i] = time.perf_counter_ns() - t0
    return lat


def threaded_requests(spec_n: int, threads: int, one: Callable[[], object]) -> Outcome:
    """``threads`` threads sharing ``spec_n`` requests, each one timed; wall time
    from the moment all threads are released until the last one finishes."""
    shares = split(spec_n, threads)
    results: list[list[int]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    gate = threading.Barrier(threads + 1)

    def worker(i: int) -> None:
        gate.wait()
        try:
            results[i] = timed_requests(shares[i], one)
        except BaseException as exc:  # surfaced below, in the driving thread
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    start = time.perf_counter()
    gate.wait()
    for t in pool:
        t.join()
    seconds = time.perf_counter() - start
    if errors:
        raise errors[0]
    lat = [x for r in results for x in r]
    return Outcome(len(lat), seconds, lat)


def check_count(what: str, got: int, want: int) -> None:
    """Every message sent must have been received: anything else fails the cell."""
    if got != want:
        raise CellError(f"{what}: {got} of {want}")


def check_reply(reply: bytes, want: int) -> None:
    if len(reply) != want:
        raise CellError(f"reply of {len(reply)} bytes, expected {want}")
