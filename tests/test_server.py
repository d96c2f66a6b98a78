"""gofast.Server: many connections served by handlers set once, its
lifecycle, graceful stop, the connection limit, concurrent handshakes,
hooks and counters; and Listener.close() waking a blocked accept()."""

from __future__ import annotations

import logging
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import gofast
from conftest import Collector, echo, wait_until
from gofast import BinMessage

ECHO_ID = 300
SLOW_ID = 301
POST_ID = 302
#: A server that sends no error replies, as the Go reference (x-errors is on by default).
NO_ERRORS_EXT = {"errors.extension": False}


def dial(server: gofast.Server, name: str = "client") -> gofast.Transport:
    t = gofast.Transport.connect(server.address, name=name)
    t.handshake(10.0)
    return t


@pytest.fixture
def server() -> Iterator[gofast.Server]:
    s = gofast.Server(("127.0.0.1", 0), name="srv")
    s.subscribe(ECHO_ID, echo)
    yield s
    s.stop(grace=0)


def test_handlers_apply_to_every_connection(server: gofast.Server) -> None:
    posts = Collector()
    server.subscribe(POST_ID, lambda _s, m: posts.append(m.data))
    server.start()
    clients = [dial(server, f"c{i}") for i in range(5)]
    try:
        for i, c in enumerate(clients):
            reply = c.request(BinMessage(ECHO_ID, b"hi %d" % i), timeout=10)
            assert reply.data == b"hi %d" % i
            c.post(BinMessage(POST_ID, b"p%d" % i), flush=True)
        assert sorted(posts.wait_for(5)) == [b"p%d" % i for i in range(5)]
        wait_until(lambda: len(server.connections) == 5, what="5 live connections")
        st = server.stats()
        assert st["n_accepted"] == 5 and st["n_live"] == 5
        assert st["n_rx"] >= 10  # summed over the connections
    finally:
        for c in clients:
            c.close()
    wait_until(lambda: not server._live, what="closed connections forgotten")
    st = server.stats()
    assert st["n_live"] == 0 and st["n_rx"] >= 10, "a gone connection's counters kept"


def test_stop_ends_start_and_serve_forever() -> None:
    s = gofast.Server(name="life")
    s.subscribe(ECHO_ID, echo)
    runner = threading.Thread(target=s.serve_forever)
    runner.start()
    c = dial(s)
    assert c.request(BinMessage(ECHO_ID, b"x"), timeout=10).data == b"x"
    assert s.running
    s.stop(grace=1)
    runner.join(10)
    assert not runner.is_alive(), "serve_forever() did not return after stop()"
    assert not s.running
    wait_until(lambda: c.closed, what="the client sees the server close")
    assert s._listener.closed
    s.stop()  # idempotent


def test_context_manager_starts_and_stops() -> None:
    with gofast.Server(name="ctx").subscribe(ECHO_ID, echo) as s:
        assert s.running
        with dial(s) as c:
            assert c.request(BinMessage(ECHO_ID, b"y"), timeout=10).data == b"y"
            wait_until(lambda: len(s.connections) == 1, what="connected")
            conns = s.connections
    assert not s.running and conns[0].closed
    with pytest.raises(gofast.UsageError):
        s.subscribe(ECHO_ID, echo)  # handlers are set before start


def test_stop_lets_a_slow_response_reach_the_client() -> None:
    release = threading.Event()
    entered = threading.Event()

    def slow(stream: gofast.Stream | None, msg: BinMessage) -> None:
        assert stream is not None

        # Answered later from another thread: still in flight until then.
        def later() -> None:
            release.wait(10)
            stream.respond(msg)

        entered.set()
        threading.Thread(target=later).start()

    # Answering after the handler returned needs x-errors off (on by
    # default, it fails such a request at once with RemoteError NoResponse).
    s = gofast.Server(name="grace", settings=NO_ERRORS_EXT).subscribe(SLOW_ID, slow).start()
    c = dial(s)
    with ThreadPoolExecutor(2) as pool:
        reply = pool.submit(c.request, BinMessage(SLOW_ID, b"late"), None, 10)
        assert entered.wait(10)
        stopped = pool.submit(s.stop, 10)
        # stop() waits for the response: it is not done until we release it.
        assert not stopped.done()
        wait_until(lambda: not s.running, what="stopped accepting")
        # (no connect attempt: another process may take the freed port)
        assert s._listener.closed
        release.set()
        assert reply.result(10).data == b"late"
        stopped.result(10)
    wait_until(lambda: c.closed, what="closed after the work finished")


def test_stop_closes_after_grace_when_work_never_finishes() -> None:
    entered = threading.Event()
    kept: list[Any] = []

    def keeps(stream: Any, msg: BinMessage) -> None:
        # Keeps the stream (it could be answered later) and never responds:
        # in flight until grace ends.
        kept.append(stream)
        entered.set()

    s = gofast.Server(name="stuck").subscribe(SLOW_ID, keeps).start()
    c = dial(s)
    with ThreadPoolExecutor(1) as pool:
        reply = pool.submit(c.request, BinMessage(SLOW_ID, b"never"), None, 10)
        assert entered.wait(10)
        t0 = time.monotonic()
        s.stop(grace=0.3)
        took = time.monotonic() - t0
        assert 0.3 <= took < 5, took
        with pytest.raises(gofast.ConnectionClosed):
            reply.result(10)


@pytest.mark.parametrize("ext", [False, True], ids=["plain", "x-errors"])
def test_a_request_nobody_can_answer_any_more_is_not_left_in_flight(ext: bool) -> None:
    """A handler that returns without responding and keeps no reference to
    its stream leaves nothing that could answer: stop() need not wait. (With
    x-errors the requester is told at once; without, it sees the close.)"""
    entered = threading.Event()
    s = gofast.Server(name="dropped", settings={"errors.extension": ext})
    s.subscribe(SLOW_ID, lambda _s, _m: entered.set()).start()
    c = dial(s)
    with ThreadPoolExecutor(1) as pool:
        reply = pool.submit(c.request, BinMessage(SLOW_ID, b"never"), None, 30)
        assert entered.wait(10)
        wait_until(lambda: all(t._requests_unanswered() == 0 for t in s.connections))
        t0 = time.monotonic()
        s.stop(grace=30)
        assert time.monotonic() - t0 < 10, "stop() waited for a request nobody can answer"
        expected = gofast.RemoteError if ext else gofast.ConnectionClosed
        with pytest.raises(expected):
            reply.result(10)


def test_a_returned_reply_is_not_left_in_flight() -> None:
    """A request handler may return its reply instead of responding: the
    request is over then, and stop() need not wait out its grace for it."""
    s = gofast.Server(name="returns").subscribe(ECHO_ID, lambda _s, m: m).start()
    c = dial(s)
    assert c.request(BinMessage(ECHO_ID, b"back"), timeout=10).data == b"back"
    t0 = time.monotonic()
    s.stop(grace=30)
    assert time.monotonic() - t0 < 10, "stop() waited for a request already answered"
    c.close()


def test_stop_waits_for_a_stream_the_peer_opened() -> None:
    def on_stream(stream: gofast.Stream | None, msg: BinMessage) -> Any:
        assert stream is not None
        return lambda m: stream.close() if m is None else None

    s = gofast.Server(name="streams").subscribe(SLOW_ID, on_stream).start()
    c = dial(s)
    wait_until(lambda: len(s.connections) == 1, what="connected")
    st = c.stream(BinMessage(SLOW_ID, b"open"))
    wait_until(lambda: s.connections[0]._exchanges_in_use()[1] == 1, what="stream opened")
    with ThreadPoolExecutor(1) as pool:
        stopped = pool.submit(s.stop, 10)
        wait_until(lambda: not s.running, what="stopping")
        assert not stopped.done()
        st.close()  # our side ends; the server's callback gets None
        stopped.result(10)
    c.close()


def test_connection_limit_refuses_and_counts() -> None:
    with gofast.Server(name="lim", max_connections=2).subscribe(ECHO_ID, echo) as s:
        a, b = dial(s, "a"), dial(s, "b")
        extra = gofast.Transport.connect(s.address, name="extra")
        with pytest.raises((gofast.ConnectionClosed, gofast.Timeout)):
            extra.handshake(5.0)
        wait_until(lambda: s.stats()["n_refused"] == 1, what="refusal counted")
        for t in (a, b):
            assert t.request(BinMessage(ECHO_ID, b"ok"), timeout=10).data == b"ok"
        assert s.stats()["n_live"] == 2
        a.close()
        wait_until(lambda: len(s.connections) == 1, what="a slot freed")
        c = dial(s, "c")  # room again
        assert c.request(BinMessage(ECHO_ID, b"c"), timeout=10).data == b"c"
        for t in (b, c, extra):
            t.close()


def test_a_silent_client_delays_no_one_and_is_dropped() -> None:
    with gofast.Server(name="hs", handshake_timeout=3.0).subscribe(ECHO_ID, echo) as s:
        silent = socket.create_connection(s.address, timeout=10)
        try:
            wait_until(lambda: s.stats()["n_accepted"] == 1, what="silent client accepted")
            t0 = time.monotonic()
            with dial(s) as c:
                assert c.request(BinMessage(ECHO_ID, b"z"), timeout=10).data == b"z"
            assert time.monotonic() - t0 < 2.5, "the real client waited for the silent one"
            # dropped after the handshake timeout: after what the server
            # sent (its whoami), the silent socket reads EOF
            while silent.recv(1 << 16):
                pass
            assert time.monotonic() - t0 < 10
            wait_until(lambda: s.stats()["n_handshake_failed"] == 1, what="drop counted")
            assert s.stats()["n_live"] == 0
        finally:
            silent.close()


def test_stop_returns_once_the_handshake_threads_have_ended() -> None:
    # A handshake thread left running when the interpreter shuts down dies
    # inside native code (the process aborts): stop() must wait for them.
    class SlowRecord(logging.Handler):
        # The handshake thread's last words take a while (as on a loaded
        # machine): a stop() that does not wait returns before they end.
        def emit(self, record: logging.LogRecord) -> None:
            if "handshake" in record.getMessage():
                time.sleep(0.3)

    slow = SlowRecord(logging.INFO)
    logger = logging.getLogger("gofast")
    logger.addHandler(slow)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    s = gofast.Server(name="hs-stop", handshake_timeout=30.0).start()
    silent = socket.create_connection(s.address, timeout=10)
    try:
        wait_until(lambda: s.stats()["n_accepted"] == 1, what="silent client accepted")
        s.stop(grace=0)
        left = [th.name for th in threading.enumerate() if th.name == "gofast-hs-stop-hs"]
        assert left == [], "a handshake thread outlived stop()"
    finally:
        silent.close()
        logger.removeHandler(slow)
        logger.setLevel(old_level)


def test_hooks_once_per_connection_and_a_raising_hook_is_counted() -> None:
    connected = Collector()
    disconnected = Collector()

    def on_connect(t: gofast.Transport) -> None:
        connected.append(t)
        raise RuntimeError("hook bug")

    s = gofast.Server(name="hooks", on_connect=on_connect, on_disconnect=disconnected.append)
    with s.subscribe(ECHO_ID, echo):
        clients = [dial(s, f"h{i}") for i in range(3)]
        connected.wait_for(3)
        for c in clients:  # the raising hook killed nothing
            assert c.request(BinMessage(ECHO_ID, b"h"), timeout=10).data == b"h"
        clients[0].close()
        disconnected.wait_for(1)
        wait_until(lambda: s.stats()["n_hook_errors"] == 3, what="hook errors counted")
    # the rest are reported on stop, each once
    assert len(disconnected.wait_for(3)) == 3
    assert len(set(map(id, disconnected.snapshot()))) == 3
    assert len(connected.snapshot()) == 3
    for c in clients:
        c.close()


def test_peer_address_known_after_the_peer_closed() -> None:
    with gofast.Server(name="addr") as s:
        c = dial(s)
        wait_until(lambda: len(s.connections) == 1, what="connected")
        t = s.connections[0]
        expected = c.local_address
        c.close()
        wait_until(lambda: t.closed, what="server side closed")
        assert t.peer_address == expected


def test_ipv6_server() -> None:
    try:
        s = gofast.Server(("::1", 0), name="v6")
    except OSError as e:
        pytest.skip(f"no IPv6 loopback: {e}")
    with s.subscribe(ECHO_ID, echo):
        assert s.address[0] == "::1"
        with dial(s) as c:
            assert c.request(BinMessage(ECHO_ID, b"6"), timeout=10).data == b"6"
            assert c.peer_address is not None and c.peer_address[0] == "::1"


def in_accept(native_id: int) -> bool:
    """The thread sits in accept(2) (Linux x86-64 /proc; elsewhere: assume so)."""
    try:
        with open(f"/proc/self/task/{native_id}/syscall") as f:
            number = f.read().split()[0]
    except (OSError, IndexError):
        return True
    return platform.machine() != "x86_64" or number in ("43", "288")  # accept, accept4


def test_listener_close_wakes_a_blocked_accept() -> None:
    lis = gofast.listen(("127.0.0.1", 0))
    tid: list[int] = []
    with ThreadPoolExecutor(1) as pool:

        def accept() -> gofast.Transport:
            tid.append(threading.get_native_id())
            return lis.accept()  # no timeout to hide behind

        fut = pool.submit(accept)
        wait_until(lambda: tid != [] and in_accept(tid[0]), what="thread blocked in accept()")
        lis.close()
        with pytest.raises(gofast.ConnectionClosed):
            fut.result(5)
    with pytest.raises(gofast.ConnectionClosed):
        lis.accept(timeout=1)


CTRL_C_CHILD = """
import threading, gofast
from conftest import wait_until
s = gofast.Server(name="sigint")
c = gofast.Transport.connect(s.address)

def ready() -> None:  # once serve_forever() runs, it handles Ctrl-C
    wait_until(lambda: s.running, what="serving")
    c.handshake(10.0)
    wait_until(lambda: len(s.connections) == 1, what="connected")
    print("ready", flush=True)

threading.Thread(target=ready, daemon=True).start()
try:
    s.serve_forever(grace=0)
except KeyboardInterrupt:
    wait_until(lambda: c.closed, what="client sees the stop")
    print("interrupted, running:", s.running, flush=True)
"""


def test_ctrl_c_stops_serve_forever() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_CHILD],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err[-3000:]
    assert out == "interrupted, running: False\n", (out, err[-3000:])


def test_stop_from_a_hook_and_from_two_threads() -> None:
    def stop_from_hook(t: gofast.Transport) -> None:
        s.stop(grace=0)  # inside stop()'s own on_disconnect: must not wait for itself

    s = gofast.Server(name="stop2", on_disconnect=stop_from_hook).subscribe(ECHO_ID, echo)
    s.start()
    c = dial(s)
    wait_until(lambda: len(s.connections) == 1, what="connected")
    with ThreadPoolExecutor(2) as pool:
        both = [pool.submit(s.stop, 1.0) for _ in range(2)]
        for f in both:
            f.result(10)  # each returns, once everything is closed
    wait_until(lambda: c.closed, what="client closed")
    assert s.stats()["n_hook_errors"] == 0
