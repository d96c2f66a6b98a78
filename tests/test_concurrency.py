"""One transport shared by many threads: every response finds its request,
every post arrives once, both sides at once, and the limits (handlers that
would deadlock, an exhausted opaque range) fail loudly instead of hanging."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import gofast
from conftest import echo, wait_until
from gofast import BinMessage

ECHO_ID = 600
POST_ID = 601
SILENT_ID = 602
NESTED_ID = 603


def run_threads(n: int, work: Callable[[int], object], timeout: float = 60) -> list[Any]:
    """Runs ``work(i)`` on ``n`` threads at once; returns the results and
    re-raises the first failure."""
    start = threading.Barrier(n)

    def run(i: int) -> object:
        start.wait(timeout)
        return work(i)

    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(run, i) for i in range(n)]
        return [f.result(timeout=timeout) for f in futures]


def test_requests_from_16_threads_each_get_their_own_response(pair_factory: Any) -> None:
    p = pair_factory(server_setup=lambda t: t.subscribe(ECHO_ID, echo))
    n_threads, n_requests = 16, 500

    def work(tid: int) -> int:
        for i in range(n_requests):
            data = f"thread {tid} request {i} ".encode() * (1 + i % 7)
            reply = p.client.request(BinMessage(ECHO_ID, data), timeout=30)
            assert reply.id == ECHO_ID
            assert reply.data == data, f"thread {tid} got {reply.data[:40]!r} for request {i}"
        return n_requests

    assert sum(run_threads(n_threads, work)) == n_threads * n_requests
    assert p.client.stats()["n_rxresp"] == n_threads * n_requests + 1  # + whoami
    assert p.client._exchanges_in_use() == (0, 0)


def test_posts_from_8_threads_arrive_exactly_once_in_per_thread_order(
    pair_factory: Any,
) -> None:
    n_threads, n_posts = 8, 2000
    got: dict[int, list[int]] = defaultdict(list)
    cv = threading.Condition()
    total = [0]

    def on_post(stream: gofast.Stream | None, msg: BinMessage) -> None:
        sender, i = msg.data[0], int.from_bytes(msg.data[1:], "big")
        with cv:
            got[sender].append(i)
            total[0] += 1
            cv.notify_all()

    p = pair_factory(server_setup=lambda t: t.subscribe(POST_ID, on_post))

    def work(tid: int) -> None:
        for i in range(n_posts):
            p.client.post(BinMessage(POST_ID, bytes([tid]) + i.to_bytes(4, "big")))
        p.client.flush()

    run_threads(n_threads, work)
    with cv:
        assert cv.wait_for(lambda: total[0] >= n_threads * n_posts, 30), f"{total[0]} posts"
    assert sorted(got) == list(range(n_threads))
    for sender, seqs in got.items():
        assert seqs == list(range(n_posts)), f"sender {sender}: lost, doubled or reordered"
    assert p.server.stats()["n_rxpost"] == n_threads * n_posts


def test_requests_from_both_sides_at_once(pair_factory: Any) -> None:
    p = pair_factory(
        server_setup=lambda t: t.subscribe(ECHO_ID, echo),
        client_setup=lambda t: t.subscribe(ECHO_ID, echo),
    )
    n_per_side, n_requests = 4, 300

    def work(i: int) -> int:
        side, name = (p.client, "client") if i % 2 == 0 else (p.server, "server")
        for k in range(n_requests):
            data = f"{name}-{i}-{k}".encode()
            assert side.request(BinMessage(ECHO_ID, data), timeout=30).data == data
        return n_requests

    assert sum(run_threads(2 * n_per_side, work)) == 2 * n_per_side * n_requests
    for t in (p.client, p.server):
        assert t._exchanges_in_use() == (0, 0)
        assert t.stats()["n_mdrops"] == 0


def test_streams_and_requests_interleave_across_threads(pair_factory: Any) -> None:
    def stream_echo(stream: gofast.Stream | None, msg: BinMessage) -> Any:
        assert stream is not None

        def on_msg(m: BinMessage | None) -> None:
            if m is None:
                stream.close()
            else:
                stream.send(m)

        return on_msg

    def setup(t: gofast.Transport) -> None:
        t.subscribe(ECHO_ID, echo)
        t.subscribe(NESTED_ID, stream_echo)

    p = pair_factory(server_setup=setup)

    def work(tid: int) -> None:
        for k in range(20):
            if tid % 2:
                data = f"{tid}/{k}".encode()
                assert p.client.request(BinMessage(ECHO_ID, data), timeout=30).data == data
                continue
            sent = [f"{tid}/{k}/{j}".encode() for j in range(10)]
            with p.client.stream(BinMessage(NESTED_ID, b"")) as s:
                for d in sent:
                    s.send(BinMessage(ECHO_ID, d))
                got = [s.recv(timeout=30) for _ in sent]
            assert [m.data for m in got if m is not None] == sent
            assert s.recv(timeout=30) is None

    run_threads(8, work)
    wait_until(lambda: p.client._exchanges_in_use() == (0, 0) == p.server._exchanges_in_use())


def test_request_inside_a_handler_is_a_usage_error_not_a_deadlock(
    pair_factory: Any, collector: Any
) -> None:
    holder: list[gofast.Transport] = []

    def nested(stream: gofast.Stream | None, msg: BinMessage) -> Any:
        t = holder[0]
        for call in (
            lambda: t.request(BinMessage(ECHO_ID, b"inner"), timeout=5),
            lambda: t.ping("inner", timeout=5),
            lambda: t.whoami(timeout=5),
        ):
            try:
                call()
            except gofast.UsageError as e:
                collector.append(e)
            except Exception as e:  # noqa: BLE001 - a wrong exception fails below
                collector.append(e)
            else:
                collector.append("no error")
        if stream is None:
            return None
        if stream.is_request:
            stream.respond(BinMessage(NESTED_ID, b"outer done"))
            return None

        def on_msg(m: BinMessage | None) -> None:
            if m is None:
                stream.close()
                return
            try:
                t.request(BinMessage(ECHO_ID, b"from callback"), timeout=5)
            except Exception as e:  # noqa: BLE001 - a wrong exception fails below
                collector.append(e)
            else:
                collector.append("no error")

        return on_msg

    def setup(t: gofast.Transport) -> None:
        holder.append(t)
        t.subscribe(NESTED_ID, nested)
        t.subscribe(ECHO_ID, echo)

    p = pair_factory(server_setup=setup, client_setup=lambda t: t.subscribe(ECHO_ID, echo))
    reply = p.client.request(BinMessage(NESTED_ID, b""), timeout=10)
    assert reply.data == b"outer done"
    errors = collector.wait_for(3)
    assert all(isinstance(e, gofast.UsageError) for e in errors), errors

    # From a POST handler and a stream callback too (also the reader thread).
    p.client.post(BinMessage(NESTED_ID, b""), flush=True)
    assert all(isinstance(e, gofast.UsageError) for e in collector.wait_for(6)[3:])
    s = p.client.stream(BinMessage(NESTED_ID, b""), collector.append)
    assert all(isinstance(e, gofast.UsageError) for e in collector.wait_for(9)[6:])
    s.send(BinMessage(NESTED_ID, b"go"), flush=True)
    assert isinstance(collector.wait_for(10)[9], gofast.UsageError)
    s.close()
    assert collector.wait_for(11)[10] is None
    assert p.server.request(BinMessage(ECHO_ID, b"outside"), timeout=5).data == b"outside"


def test_request_handed_to_another_thread_works(pair_factory: Any, collector: Any) -> None:
    """What the UsageError tells a handler to do instead."""
    holder: list[gofast.Transport] = []
    pool = ThreadPoolExecutor(1)

    def handler(stream: gofast.Stream | None, msg: BinMessage) -> None:
        assert stream is not None

        def work() -> None:
            inner = holder[0].request(BinMessage(ECHO_ID, b"inner"), timeout=5)
            stream.respond(BinMessage(NESTED_ID, b"outer+" + inner.data))

        pool.submit(work)

    def setup(t: gofast.Transport) -> None:
        holder.append(t)
        t.subscribe(NESTED_ID, handler)

    # Answering after the handler returned needs x-errors off on the server:
    # under it (the default) the request would fail at once with NoResponse.
    p = pair_factory(
        server_setup=setup,
        client_setup=lambda t: t.subscribe(ECHO_ID, echo),
        server_settings={"errors.extension": False},
    )
    try:
        assert p.client.request(BinMessage(NESTED_ID, b""), timeout=10).data == b"outer+inner"
    finally:
        pool.shutdown(wait=True)


OPAQUES_4 = {"opaque.start": 10_000, "opaque.end": 10_003}


def test_fifth_concurrent_request_on_four_opaques_raises_opaque_exhausted(
    pair_factory: Any, collector: Any
) -> None:
    p = pair_factory(
        client_settings=OPAQUES_4,
        server_setup=lambda t: t.subscribe(SILENT_ID, lambda s, m: collector.append(s)),
        server_settings={"errors.extension": False},  # answers after returning, as above
    )
    with ThreadPoolExecutor(4) as pool:
        waiting = [
            pool.submit(p.client.request, BinMessage(SILENT_ID, bytes([i])), None, 10)
            for i in range(4)
        ]
        held = collector.wait_for(4)  # all four are in flight
        assert p.client._exchanges_in_use()[0] == 4

        t0 = time.monotonic()
        with pytest.raises(gofast.OpaqueExhausted):
            p.client.request(BinMessage(SILENT_ID, b"fifth"), timeout=10)
        with pytest.raises(gofast.OpaqueExhausted):
            p.client.stream(BinMessage(SILENT_ID, b"fifth"), lambda m: None)
        assert time.monotonic() - t0 < 2, "exhaustion should fail at once, not wait"

        for s in held:  # now answer them: the waiting requests complete
            s.respond(BinMessage(SILENT_ID, b"late but in time"))
        assert [f.result(timeout=10).data for f in waiting] == [b"late but in time"] * 4
    assert p.client.ping("free again", timeout=5) == "free again"
    assert p.client._exchanges_in_use() == (0, 0)
