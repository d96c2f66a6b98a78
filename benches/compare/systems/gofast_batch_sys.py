"""gofast for Python through its batch API, against the same server as
``gofast_sys``: what a caller gains by handing many messages over per call.

* one-way and bulk: ``post_many`` 1,000 messages per call, into a server
  handler subscribed with ``subscribe_batch`` (one Python call per read);
* request16: ``request_many`` with 16 requests per call from one thread: the
  16 outstanding requests of pyzmq's DEALER/ROUTER or asyncio's 16 tasks,
  without 16 threads. Each request's latency is its call's.
"""

from __future__ import annotations

import time

import gofast

from ..spec import Endpoint, Outcome, ServerHandle, Spec
from ._common import check_reply
from .gofast_sys import BATCH_ID, ECHO_ID, connect, server_count
from .gofast_sys import serve as gofast_serve

PER_CALL = 1000


def serve(spec: Spec) -> ServerHandle:
    return gofast_serve(spec)


def drive(spec: Spec, endpoint: Endpoint) -> Outcome:
    t = connect(endpoint)
    try:
        if spec.kind == "request16":
            return _request_many(t, spec)
        return _post_many(t, spec)
    finally:
        t.close()


def _post_many(t: gofast.Transport, spec: Spec) -> Outcome:
    msg = gofast.BinMessage(BATCH_ID, spec.payload())
    full, rest = divmod(spec.n, PER_CALL)
    batch = [msg] * PER_CALL
    start = time.perf_counter()
    for _ in range(full):
        t.post_many(batch)
    if rest:
        t.post_many(batch[:rest])
    return server_count(t, spec, start)


def _request_many(t: gofast.Transport, spec: Spec) -> Outcome:
    batch = [gofast.BinMessage(ECHO_ID, spec.payload())] * spec.concurrency

    def call() -> int:
        t0 = time.perf_counter_ns()
        for reply in t.request_many(batch):
            check_reply(reply.data, spec.size)
        return time.perf_counter_ns() - t0

    for _ in range(spec.warmup // spec.concurrency):
        call()
    calls = spec.n // spec.concurrency
    lat: list[int] = []
    start = time.perf_counter()
    for _ in range(calls):
        lat.extend([call()] * spec.concurrency)
    return Outcome(len(lat), time.perf_counter() - start, lat)
