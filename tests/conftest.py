"""Shared fixtures: connected transport pairs over 127.0.0.1."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import gofast

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


def make_pair(
    client_setup: Setup | None = None,
    server_setup: Setup | None = None,
    client_settings: dict[str, Any] | None = None,
    server_settings: dict[str, Any] | None = None,
    handshake: bool = True,
) -> Pair:
    """Connects two transports; each setup callback runs before the
    handshake (subscribe handlers there)."""
    with gofast.listen(("127.0.0.1", 0)) as lis:
        with ThreadPoolExecutor(1) as pool:
            accepted = pool.submit(lis.accept, name="server", settings=server_settings, timeout=10)
            client = gofast.Transport.connect(lis.address, name="client", settings=client_settings)
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


@pytest.fixture
def pair_factory() -> Iterator[Callable[..., Pair]]:
    """``pair_factory(client_setup=..., server_setup=..., ...)`` -> Pair;
    every pair made is closed at teardown."""
    made: list[Pair] = []

    def factory(**kwargs: Any) -> Pair:
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
