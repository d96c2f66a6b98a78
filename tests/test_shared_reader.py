"""The shared reader (``reader: "shared"``): one epoll thread reads every
such transport of the process, instead of a reader thread each. What users
rely on: it is what the setting says (one thread, not one per connection),
each connection's end and errors stay its own, a failing handler does not
stop the others, TLS and ``idle.timeout`` keep their own reader, and the
process exits cleanly with such transports open. The transport API over it
is tested by every ``link`` test's "shared" case (conftest.py) and by the
bad-input cases (test_bad_input.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest

import gofast
import gofast.aio
import wire
from conftest import SHARED, Pair, make_pair, wait_until
from gofast import BinMessage, _native

ECHO_ID = 100
POST_ID = 101


def task_count() -> int:
    return len(os.listdir("/proc/self/task"))


def echo_pairs(n: int, **kw: Any) -> list[Pair]:
    return [
        make_pair(
            server_setup=lambda t: t.subscribe(ECHO_ID, lambda s, m: s.respond(m)),
            link="shared",
            **kw,
        )
        for _ in range(n)
    ]


def test_the_setting_is_thread_by_default_and_refuses_other_words() -> None:
    assert gofast.default_settings()["reader"] == "thread"
    with gofast.listen(("127.0.0.1", 0)) as lis:
        with pytest.raises(gofast.SettingsError, match='"reader" takes "thread" or "shared"'):
            gofast.Transport.connect(lis.address, settings={"reader": "epoll"})


def test_gofast_aio_refuses_the_shared_reader() -> None:
    async def connect() -> None:
        with gofast.listen(("127.0.0.1", 0)) as lis:
            await gofast.aio.connect(lis.address, settings=SHARED)

    with pytest.raises(gofast.SettingsError, match="for the sync API"):
        asyncio.run(connect())


def test_one_thread_reads_every_connection() -> None:
    make_pair(link="shared").close()  # the shared reader exists from here on
    before_threads = task_count()
    before_polled = _native._shared_reader_connections()
    pairs = echo_pairs(30)
    try:
        # Each transport keeps only its writer thread (a reader thread each
        # would make 120; a thread or two of the set-up may still be ending).
        assert 60 <= task_count() - before_threads <= 63
        assert _native._shared_reader_connections() - before_polled == 60
        for i, p in enumerate(pairs):
            reply = p.client.request(BinMessage(ECHO_ID, b"%d" % i), timeout=10)
            assert reply.data == b"%d" % i
    finally:
        for p in pairs:
            p.close()
    assert _native._shared_reader_connections() == before_polled
    wait_until(lambda: task_count() <= before_threads, what="writer threads gone")


def test_handlers_of_every_connection_run_on_the_shared_thread() -> None:
    threads: set[int] = set()

    def where(stream: gofast.Stream, msg: BinMessage) -> BinMessage:
        threads.add(threading.get_ident())
        return msg

    pairs = [
        make_pair(server_setup=lambda t: t.subscribe(ECHO_ID, where), link="shared")
        for _ in range(5)
    ]
    try:
        for p in pairs:
            p.client.request(BinMessage(ECHO_ID, b"x"), timeout=10)
    finally:
        for p in pairs:
            p.close()
    assert len(threads) == 1
    assert threads != {threading.get_ident()}


def test_a_raising_handler_leaves_the_other_connections_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="gofast")
    raised = threading.Event()

    def boom(stream: Any, msg: BinMessage) -> None:
        raised.set()
        raise RuntimeError("handler failed")

    bad = make_pair(server_setup=lambda t: t.subscribe(POST_ID, boom), link="shared")
    good = echo_pairs(1)[0]
    try:
        bad.client.post(BinMessage(POST_ID, b"x"), flush=True)
        assert raised.wait(10)
        wait_until(lambda: bad.server.stats()["n_handler_errors"] == 1, what="error counted")
        assert good.client.request(BinMessage(ECHO_ID, b"still"), timeout=10).data == b"still"
        assert bad.client.ping("alive", timeout=10) == "alive"
    finally:
        bad.close()
        good.close()
    assert any("handler failed" in r.getMessage() or r.exc_info for r in caplog.records)


def test_a_connection_that_breaks_the_protocol_ends_alone() -> None:
    other = echo_pairs(1)[0]
    try:
        with wire.raw_server(SHARED) as (raw, victim):
            raw.send(b"SSH-2.0-OpenSSH_9.6\r\n")
            wait_until(lambda: victim.closed, what="the victim closed")
            with pytest.raises(gofast.ConnectionClosed, match="bad frame marker"):
                victim.ping("x", timeout=10)
        assert other.client.request(BinMessage(ECHO_ID, b"ok"), timeout=10).data == b"ok"
    finally:
        other.close()


def test_the_peers_close_ends_the_shared_side_and_fails_its_requests() -> None:
    p = make_pair(link="shared")
    try:
        p.client.close()
        wait_until(lambda: p.server.closed, what="server side closed")
        with pytest.raises(gofast.ConnectionClosed):
            p.server.request(BinMessage(ECHO_ID, b"x"), timeout=10)
    finally:
        p.close()


@pytest.mark.parametrize("link", ["tls", "idle"])
def test_tls_and_idle_timeout_keep_their_own_reader(link: str) -> None:
    before = _native._shared_reader_connections()
    settings = {**SHARED, **({"idle.timeout": 30.0} if link == "idle" else {})}
    p = make_pair(
        server_setup=lambda t: t.subscribe(ECHO_ID, lambda s, m: s.respond(m)),
        client_settings=settings,
        server_settings=settings,
        link="tls" if link == "tls" else "tcp",
    )
    try:
        assert _native._shared_reader_connections() == before
        assert p.client.request(BinMessage(ECHO_ID, b"own"), timeout=10).data == b"own"
    finally:
        p.close()


def test_a_request_from_a_handler_on_the_shared_thread_is_refused() -> None:
    errors: list[BaseException] = []

    def asks(stream: gofast.Stream, msg: BinMessage) -> BinMessage:
        try:
            stream_transport.request(BinMessage(ECHO_ID, b"inner"), timeout=1)
        except gofast.GofastError as e:
            errors.append(e)
        return msg

    p = make_pair(server_setup=lambda t: t.subscribe(ECHO_ID, asks), link="shared")
    stream_transport = p.server
    try:
        assert p.client.request(BinMessage(ECHO_ID, b"outer"), timeout=10).data == b"outer"
    finally:
        p.close()
    assert len(errors) == 1 and "reader thread" in str(errors[0])


def test_the_process_exits_cleanly_with_shared_transports_open(tmp_path: Any) -> None:
    script = tmp_path / "open_at_exit.py"
    script.write_text(
        textwrap.dedent(
            """
            import gofast
            s = {"reader": "shared"}
            lis = gofast.listen(("127.0.0.1", 0))
            import threading
            box = {}
            th = threading.Thread(target=lambda: box.update(t=lis.accept(settings=s, timeout=10)))
            th.start()
            c = gofast.Transport.connect(lis.address, settings=s)
            th.join()
            srv = box["t"]
            srv.subscribe(100, lambda st, m: st.respond(m))
            th = threading.Thread(target=srv.handshake)
            th.start()
            c.handshake()
            th.join()
            print(c.request(gofast.BinMessage(100, b"bye"), timeout=10).data.decode())
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    assert out.strip() == "bye"
    assert "Fatal" not in err and "FATAL" not in err


def test_a_server_with_the_shared_reader_serves_many_clients() -> None:
    server = gofast.Server(("127.0.0.1", 0), settings=SHARED)
    server.subscribe(ECHO_ID, lambda s, m: s.respond(m))
    server.start()
    clients: list[gofast.Transport] = []
    try:
        for i in range(20):
            c = gofast.Transport.connect(server.address, name=f"c{i}", settings=SHARED)
            c.handshake(10.0)
            clients.append(c)
        for i, c in enumerate(clients):
            assert c.request(BinMessage(ECHO_ID, b"%d" % i), timeout=10).data == b"%d" % i
        wait_until(lambda: len(server.connections) == 20, what="20 connections listed")
    finally:
        for c in clients:
            c.close()
        server.stop(grace=1.0)
