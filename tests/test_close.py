"""Closing: idempotent, fails what waits, ends streams, flushes what is
queued, works from a handler, and leaves no thread behind."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import gofast
from conftest import wait_until
from gofast import BinMessage

POST_ID = 700
SILENT_ID = 701
STREAM_ID = 702
CLOSE_ID = 703
#: Settings of a server whose handlers hold requests and return without
#: replying: without x-errors (on by default, it would fail each such request
#: at once with RemoteError NoResponse, where these tests need it pending).
HOLDS = {"errors.extension": False}


def hold(collector: Any) -> Callable[[gofast.Stream | None, BinMessage], None]:
    """A handler that keeps each request's stream and never answers."""
    return lambda stream, msg: collector.append(stream)


def task_count() -> int:
    return len(os.listdir("/proc/self/task"))


def test_close_is_idempotent(pair: Any) -> None:
    assert not pair.client.closed
    pair.client.close()
    assert pair.client.closed
    pair.client.close()
    pair.client.close()
    assert pair.client.closed
    wait_until(lambda: pair.server.closed, what="the peer sees the close")
    pair.server.close()


@pytest.mark.parametrize("side", ["client", "server"])
def test_calls_after_close_raise_connection_closed(pair: Any, side: str) -> None:
    t = getattr(pair, side)
    t.close()
    msg = BinMessage(POST_ID, b"x")
    calls: list[Callable[[], object]] = [
        lambda: t.post(msg),
        lambda: t.post(msg, flush=True),
        lambda: t.post_many([msg]),
        lambda: t.request(msg, timeout=1),
        lambda: t.stream(msg, lambda m: None),
        lambda: t.ping("x", timeout=1),
        lambda: t.whoami(timeout=1),
    ]
    for call in calls:
        with pytest.raises(gofast.ConnectionClosed) as err:
            call()
        assert isinstance(err.value, ConnectionError)


def test_close_fails_a_pending_request_promptly(pair_factory: Any, collector: Any) -> None:
    p = pair_factory(
        server_setup=lambda t: t.subscribe(SILENT_ID, lambda s, m: collector.append(s)),
        server_settings=HOLDS,
    )
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(p.client.request, BinMessage(SILENT_ID, b""), None, 60)
        collector.wait_for(1)  # the request reached the server: it is pending
        t0 = time.monotonic()
        p.client.close()
        with pytest.raises(gofast.ConnectionClosed):
            pending.result(timeout=10)
        assert time.monotonic() - t0 < 5
    assert p.client._exchanges_in_use() == (0, 0)


@pytest.mark.parametrize("closing", ["client", "server"])
def test_close_ends_open_streams_on_both_sides(
    pair_factory: Any, collector: Any, closing: str
) -> None:
    ends: dict[str, threading.Event] = {"client": threading.Event(), "server": threading.Event()}
    got: dict[str, list[BinMessage | None]] = {"client": [], "server": []}

    def callback(side: str) -> Callable[[BinMessage | None], None]:
        def cb(m: BinMessage | None) -> None:
            got[side].append(m)
            if m is None:
                ends[side].set()

        return cb

    p = pair_factory(server_setup=lambda t: t.subscribe(STREAM_ID, lambda s, m: callback("server")))
    p.client.stream(BinMessage(STREAM_ID, b""), callback("client"))
    wait_until(lambda: p.server._exchanges_in_use()[1] == 1, what="stream accepted")
    getattr(p, closing).close()
    assert ends["client"].wait(5) and ends["server"].wait(5)
    wait_until(lambda: p.client.closed and p.server.closed)
    p.close()  # joins the readers: no callback can come after this
    assert got == {"client": [None], "server": [None]}


def test_the_peer_closing_under_an_iterated_stream_cuts_it(pair_factory: Any) -> None:
    """Iteration ends with ConnectionClosed, not as if the peer had finished."""
    p = pair_factory(server_setup=lambda t: t.subscribe(STREAM_ID, lambda s, m: None))
    s = p.client.stream(BinMessage(STREAM_ID, b""))
    with ThreadPoolExecutor(1) as pool:
        it = pool.submit(lambda: list(s))
        wait_until(lambda: p.server._exchanges_in_use()[1] == 1, what="stream accepted")
        p.server.close()
        with pytest.raises(gofast.ConnectionClosed, match="cut"):
            it.result(timeout=10)


def test_peer_closing_fails_our_pending_requests_and_closes_us(
    pair_factory: Any, collector: Any
) -> None:
    p = pair_factory(
        server_setup=lambda t: t.subscribe(SILENT_ID, lambda s, m: collector.append(s)),
        server_settings=HOLDS,
    )
    with ThreadPoolExecutor(3) as pool:
        pending = [
            pool.submit(p.client.request, BinMessage(SILENT_ID, b""), None, 60) for _ in range(3)
        ]
        collector.wait_for(3)
        p.server.close()
        for f in pending:
            with pytest.raises(gofast.ConnectionClosed):
                f.result(timeout=10)
    wait_until(lambda: p.client.closed, what="client reports closed")
    with pytest.raises(gofast.ConnectionClosed):
        p.client.post(BinMessage(POST_ID, b""))
    assert p.client._exchanges_in_use() == (0, 0)


def test_close_flushes_what_is_queued(pair_factory: Any) -> None:
    n = 10_010  # ten more than whole batches: those wait for a flush
    received = [0]
    done = threading.Event()

    def on_post(stream: gofast.Stream | None, msg: BinMessage) -> None:
        assert int.from_bytes(msg.data, "big") == received[0]
        received[0] += 1
        if received[0] == n:
            done.set()

    p = pair_factory(
        client_settings={"batchsize": 1000, "flush.period": None},
        server_setup=lambda t: t.subscribe(POST_ID, on_post),
    )
    for i in range(n):
        p.client.post(BinMessage(POST_ID, i.to_bytes(4, "big")), flush=False)
    p.client.close()
    assert done.wait(10), f"{received[0]} of {n} posts arrived"
    assert p.server.stats()["n_rxpost"] == n


@pytest.mark.parametrize("side", ["server", "client"])
def test_closing_from_inside_a_handler(pair_factory: Any, side: str) -> None:
    holder: list[gofast.Transport] = []
    closed_in_handler = threading.Event()
    elapsed: list[float] = []

    def close_me(stream: gofast.Stream | None, msg: BinMessage) -> None:
        t0 = time.monotonic()
        holder[0].close()
        elapsed.append(time.monotonic() - t0)
        closed_in_handler.set()

    def setup(t: gofast.Transport) -> None:
        holder.append(t)
        t.subscribe(CLOSE_ID, close_me)

    p = pair_factory(**{f"{side}_setup": setup})
    me = p.server if side == "server" else p.client
    peer = p.client if side == "server" else p.server
    peer.post(BinMessage(CLOSE_ID, b""), flush=True)
    assert closed_in_handler.wait(10), "close() inside a handler did not return"
    assert elapsed[0] < 5
    assert me.closed
    wait_until(lambda: peer.closed, what="the peer sees the close")
    me.close()  # from outside, after: joins cleanly


def test_closing_from_inside_a_stream_callback(pair_factory: Any, collector: Any) -> None:
    holder: list[gofast.Transport] = []

    def handler(stream: gofast.Stream | None, msg: BinMessage) -> Any:
        def on_msg(m: BinMessage | None) -> None:
            collector.append(m)
            if m is not None:
                holder[0].close()

        return on_msg

    def setup(t: gofast.Transport) -> None:
        holder.append(t)
        t.subscribe(STREAM_ID, handler)

    p = pair_factory(server_setup=setup)
    s = p.client.stream(BinMessage(STREAM_ID, b""), lambda m: None)
    s.send(BinMessage(STREAM_ID, b"close now"), flush=True)
    got = collector.wait_for(2)
    assert got[0] == BinMessage(STREAM_ID, b"close now") and got[1] is None
    wait_until(lambda: p.client.closed)


def test_context_manager_closes() -> None:
    with gofast.listen(("127.0.0.1", 0)) as lis:
        with ThreadPoolExecutor(1) as pool:
            accepted = pool.submit(lis.accept, timeout=10)
            client = gofast.Transport.connect(lis.address)
            with accepted.result(timeout=10) as server:
                with client:
                    theirs = pool.submit(server.handshake, 10.0)
                    client.handshake(10.0)
                    theirs.result(timeout=10)
                    assert client.ping("in context", timeout=5) == "in context"
                assert client.closed  # at once, on leaving the block
            assert server.closed


def test_context_manager_closes_on_exception() -> None:
    with gofast.listen(("127.0.0.1", 0)) as lis:
        with ThreadPoolExecutor(1) as pool:
            accepted = pool.submit(lis.accept, timeout=10)
            with pytest.raises(RuntimeError):
                with gofast.Transport.connect(lis.address) as client:
                    raise RuntimeError("leave the block")
            assert client.closed
            accepted.result(timeout=10).close()


def test_close_without_handshake() -> None:
    with gofast.listen(("127.0.0.1", 0)) as lis:
        with ThreadPoolExecutor(1) as pool:
            accepted = pool.submit(lis.accept, timeout=10)
            client = gofast.Transport.connect(lis.address)
            server = accepted.result(timeout=10)
    client.close()
    server.close()
    assert client.closed and server.closed
    with pytest.raises(gofast.ConnectionClosed):
        client.handshake(1.0)


def test_no_threads_left_after_close(pair_factory: Any, link: str) -> None:
    gc.collect()
    before = task_count()
    # The shared reader reads for every transport and stays for the process.
    each, stays = (1, 1) if link == "shared" else (2, 0)
    pairs = [
        pair_factory(server_setup=lambda t: t.subscribe(STREAM_ID, lambda s, m: None))
        for _ in range(3)
    ]
    for p in pairs:
        p.client.stream(BinMessage(STREAM_ID, b""), lambda m: None)
        p.client.ping("x", timeout=5)
    during = task_count()
    assert during >= before + 3 * 2 * each, "expected a reader and a writer per transport"
    for p in pairs:
        p.close()
    wait_until(lambda: task_count() <= before + stays, what=f"task count back to {before}")


def test_no_threads_left_after_dropping_unclosed_transports(pair_factory: Any) -> None:
    gc.collect()
    before = task_count()
    from conftest import make_pair

    p = make_pair(server_setup=lambda t: t.subscribe(POST_ID, lambda s, m: None))
    p.client.post(BinMessage(POST_ID, b""), flush=True)
    assert p.client.ping("x", timeout=5) == "x"
    assert task_count() >= before + 4
    del p
    gc.collect()
    wait_until(lambda: task_count() <= before, what=f"task count back to {before}")


def run_python(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )


UNCLOSED_SCRIPT = textwrap.dedent(
    """
    import gc, sys
    sys.path.insert(0, {tests!r})
    from conftest import make_pair
    import gofast

    def handler(stream, msg):
        if stream is not None and stream.is_request:
            stream.respond(msg)

    pairs = [make_pair(server_setup=lambda t: t.subscribe(800, handler)) for _ in range(3)]
    for p in pairs:
        assert p.client.request(gofast.BinMessage(800, b"hi"), timeout=5).data == b"hi"
        s = p.client.stream(gofast.BinMessage(800, b""), lambda m: None)
    {ending}
    print("exiting", flush=True)
    """
)


@pytest.mark.parametrize(
    "ending",
    [
        "pass  # exit with every transport still open",
        "pairs[0].client.close()  # close one, leave the rest",
    ],
)
def test_unclosed_transports_do_not_hang_the_interpreter(ending: str) -> None:
    tests = os.path.dirname(os.path.abspath(__file__))
    script = UNCLOSED_SCRIPT.format(tests=tests, ending=ending)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "exiting"
    assert "Traceback" not in done.stderr, done.stderr


DROPPED_SCRIPT = textwrap.dedent(
    """
    import gc, sys, time
    sys.path.insert(0, {tests!r})
    from conftest import make_pair
    import gofast

    def on_msg(m):
        if m is None:  # the stream's end, on the dropped transport's reader
            for _ in range(5000):
                time.sleep(0.001)  # lets go of the GIL and takes it again

    p = make_pair(server_setup=lambda t: t.subscribe(800, lambda s, m: None))
    p.client.stream(gofast.BinMessage(800, b""), on_msg)
    del p
    gc.collect()  # dropped, never closed
    print("exiting", flush=True)
    """
)


def test_dropped_unclosed_transport_does_not_abort_the_interpreter_at_exit() -> None:
    tests = os.path.dirname(os.path.abspath(__file__))
    script = DROPPED_SCRIPT.format(tests=tests)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, f"exit code {done.returncode}: {done.stderr}"
    assert done.stdout.strip() == "exiting"
