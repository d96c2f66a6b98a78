"""Shared fixtures: connected transport pairs, over TCP on 127.0.0.1, over
a Unix socket in a temporary directory, over TLS (certificates made by
trustme for the session), or over TCP read by the shared reader
(``reader: "shared"`` on both sides); tests using ``pair``/``pair_factory``
run over each (the ``link`` fixture; a test about one kind parametrizes
``link`` itself)."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import trustme

import gofast
import gofast.aio

Setup = Callable[[gofast.Transport], object]


def wait_until(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Polls ``pred`` until it holds (a counter, a flag); fails the test
    after ``timeout`` seconds. For state with no event to wait on."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(0.002)


def echo(stream: gofast.Stream | None, msg: gofast.BinMessage) -> None:
    """A handler answering a request with its own message (POSTs: nothing)."""
    if stream is not None:
        stream.respond(msg)


class Pair:
    """A dialing ``client`` and an accepting ``server`` transport, handshaken."""

    def __init__(self, client: gofast.Transport, server: gofast.Transport) -> None:
        self.client = client
        self.server = server

    def close(self) -> None:
        self.client.close()
        self.server.close()


LINKS = ("tcp", "unix", "tls", "shared")
SHARED = {"reader": "shared"}


class Certificates:
    """A test CA, and TLS settings for a server (``localhost``/127.0.0.1)
    and a client (mutual TLS) that it signed."""

    def __init__(self) -> None:
        self.ca = trustme.CA()
        self.server_cert = self.ca.issue_cert("localhost", "127.0.0.1", common_name="server")
        self.client_cert = self.ca.issue_cert("client.test", common_name="client")

    def tls(self, leaf: trustme.LeafCert | None, **kw: Any) -> gofast.TLS:
        """TLS settings with ``leaf``'s certificate (or none) trusting our CA."""
        if leaf is None:
            return gofast.TLS(ca=self.ca.cert_pem.bytes(), **kw)
        chain = b"".join(p.bytes() for p in leaf.cert_chain_pems)
        return gofast.TLS(
            cert=chain, key=leaf.private_key_pem.bytes(), ca=self.ca.cert_pem.bytes(), **kw
        )

    def server(self, **kw: Any) -> gofast.TLS:
        return self.tls(self.server_cert, **kw)

    def client(self, **kw: Any) -> gofast.TLS:
        kw.setdefault("server_name", "localhost")
        return self.tls(self.client_cert, **kw)


_CERTS: Certificates | None = None


def certificates() -> Certificates:
    """One CA and its certificates for the whole session (made on first use)."""
    global _CERTS
    if _CERTS is None:
        _CERTS = Certificates()
    return _CERTS


@pytest.fixture(scope="session")
def certs() -> Certificates:
    return certificates()


def listen_on(link: str, directory: str | None = None) -> gofast.Listener:
    """A listener for ``link``: TCP on 127.0.0.1, a Unix socket in
    ``directory`` (a new temporary one by default), or TLS over TCP."""
    if link in ("tcp", "shared"):
        return gofast.listen(("127.0.0.1", 0))
    if link == "unix":
        directory = directory or tempfile.mkdtemp(prefix="gofast-")
        return gofast.listen(os.path.join(directory, "gofast.sock"))
    if link == "tls":
        return gofast.listen(("127.0.0.1", 0), tls=certificates().server())
    raise ValueError(f"unknown link {link!r}")


def client_tls(link: str) -> gofast.TLS | None:
    return certificates().client() if link == "tls" else None


def make_pair(
    client_setup: Setup | None = None,
    server_setup: Setup | None = None,
    client_settings: dict[str, Any] | None = None,
    server_settings: dict[str, Any] | None = None,
    handshake: bool = True,
    link: str = "tcp",
) -> Pair:
    """Connects two transports over ``link``; each setup callback runs
    before the handshake (subscribe handlers there)."""
    if link == "shared":
        client_settings = {**SHARED, **(client_settings or {})}
        server_settings = {**SHARED, **(server_settings or {})}
    with listen_on(link) as lis:
        with ThreadPoolExecutor(1) as pool:
            accepted = pool.submit(lis.accept, name="server", settings=server_settings, timeout=10)
            client = gofast.Transport.connect(
                lis.address, name="client", settings=client_settings, tls=client_tls(link)
            )
            server = accepted.result(timeout=10)
    if client_setup:
        client_setup(client)
    if server_setup:
        server_setup(server)
    if handshake:
        with ThreadPoolExecutor(1) as pool:
            theirs = pool.submit(server.handshake, 10.0)
            client.handshake(10.0)
            theirs.result(timeout=10)
    return Pair(client, server)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Runs each test that uses ``link`` (and does not parametrize it
    itself) over every kind: "tcp", "unix", "tls" and "shared". gofast.aio
    transports have no shared reader, so their tests skip that kind."""
    if "link" not in metafunc.fixturenames:
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0]
        if "link" in (names.replace(" ", "").split(",") if isinstance(names, str) else names):
            return
    aio = metafunc.module.__name__.rsplit(".", 1)[-1].startswith("test_aio")
    metafunc.parametrize("link", [k for k in LINKS if not (aio and k == "shared")])


@pytest.fixture
def pair_factory(link: str) -> Iterator[Callable[..., Pair]]:
    """``pair_factory(client_setup=..., server_setup=..., ...)`` -> Pair,
    over the test's ``link``; every pair made is closed at teardown."""
    made: list[Pair] = []

    def factory(**kwargs: Any) -> Pair:
        kwargs.setdefault("link", link)
        p = make_pair(**kwargs)
        made.append(p)
        return p

    yield factory
    for p in made:
        p.close()


@pytest.fixture
def pair(pair_factory: Callable[..., Pair]) -> Pair:
    """A handshaken pair without handlers."""
    return pair_factory()


class Collector:
    """Thread-safe list that a test can wait on (no sleeps)."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._cv = threading.Condition()

    def append(self, item: Any) -> None:
        with self._cv:
            self.items.append(item)
            self._cv.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Any]:
        with self._cv:
            if not self._cv.wait_for(lambda: len(self.items) >= count, timeout):
                raise AssertionError(
                    f"got {len(self.items)} items, wanted {count} within {timeout}s"
                )
            return list(self.items)

    def snapshot(self) -> list[Any]:
        with self._cv:
            return list(self.items)


@pytest.fixture
def collector() -> Collector:
    return Collector()


class LogRecords(logging.Handler):
    """Every record that reaches the ``gofast`` loggers, from any thread."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records = Collector()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def at(self, level: int, *words: str) -> list[str]:
        """Messages logged at ``level`` that mention every word."""
        messages = (r.getMessage() for r in self.records.snapshot() if r.levelno == level)
        return [m for m in messages if all(w in m for w in words)]


# ---------------------------------------------------------------------------
# gofast.aio: every async test runs on the default loop and on uvloop.


def loop_factories() -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The event loops the async tests run on, by name."""
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop
    }
    try:
        import uvloop
    except ImportError:  # optional: tested where installed (scripts/env.sh does)
        return factories
    factories["uvloop"] = uvloop.new_event_loop
    return factories


LOOPS = list(loop_factories())
"""Their names, for tests that start a loop in a child process."""


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    return loop_factories()


ASetup = Callable[[Any], object]


class APair:
    """A dialing ``client`` and an accepting ``server``, handshaken; each
    a ``gofast.aio.Transport`` or (``sync=``) a ``gofast.Transport``."""

    def __init__(self, client: Any, server: Any) -> None:
        self.client = client
        self.server = server

    async def close(self) -> None:
        for t in (self.client, self.server):
            if isinstance(t, gofast.aio.Transport):
                await t.aclose()
            else:
                await asyncio.to_thread(t.close)


async def make_apair(
    client_setup: ASetup | None = None,
    server_setup: ASetup | None = None,
    client_settings: dict[str, Any] | None = None,
    server_settings: dict[str, Any] | None = None,
    handshake: bool = True,
    link: str = "tcp",
    sync: str = "",
) -> APair:
    """As ``make_pair``, on the running loop: both sides asyncio, or the
    one named by ``sync`` ("client" or "server") a sync transport."""
    client: Any
    server: Any
    with listen_on(link) as lis:
        if sync == "server":
            accepted = asyncio.ensure_future(
                asyncio.to_thread(lis.accept, name="server", settings=server_settings, timeout=10)
            )
        else:
            alis = gofast.aio.Listener._of(lis)
            accepted = asyncio.ensure_future(
                alis.accept(name="server", settings=server_settings, timeout=10)
            )
        if sync == "client":
            client = await asyncio.to_thread(
                gofast.Transport.connect,
                lis.address,
                name="client",
                settings=client_settings,
                tls=client_tls(link),
            )
        else:
            client = await gofast.aio.connect(
                lis.address, name="client", settings=client_settings, tls=client_tls(link)
            )
        server = await accepted
    if client_setup:
        client_setup(client)
    if server_setup:
        server_setup(server)
    if handshake:

        async def shake(t: Any) -> object:
            if isinstance(t, gofast.aio.Transport):
                return await t.handshake(10.0)
            return await asyncio.to_thread(t.handshake, 10.0)

        await asyncio.gather(shake(client), shake(server))
    return APair(client, server)


@pytest.fixture
async def apair_factory(link: str) -> AsyncIterator[Callable[..., Awaitable[APair]]]:
    """``await apair_factory(...)`` -> APair over the test's ``link``;
    closed at teardown."""
    made: list[APair] = []

    async def factory(**kwargs: Any) -> APair:
        kwargs.setdefault("link", link)
        p = await make_apair(**kwargs)
        made.append(p)
        return p

    yield factory
    for p in made:
        await p.close()


@pytest.fixture
async def apair(apair_factory: Callable[..., Awaitable[APair]]) -> APair:
    """A handshaken asyncio pair without handlers."""
    return await apair_factory()
