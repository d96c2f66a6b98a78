"""The Rust core's log records go through Python's ``logging``, to loggers
under ``gofast``: their levels are read at every record, so reconfiguring
``logging`` takes effect at once, in both directions, without a restart.
A connection logs its life at INFO; dropped frames log at DEBUG."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

import gofast
import wire
from conftest import Collector, LogRecords, make_pair
from wire import encode_finish

TIMEOUT = 10.0


@pytest.fixture
def gofast_log() -> Iterator[tuple[logging.Logger, LogRecords]]:
    handler = LogRecords()
    logger = logging.getLogger("gofast")
    old = logger.level
    logger.addHandler(handler)
    try:
        yield logger, handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def drop_one(raw: wire.RawPeer, opaque: int) -> None:
    """Makes the transport drop a frame (a FINISH for an exchange it never
    had) and waits until it has been handled: frames are handled in order,
    so once a later ping is answered, the drop has been logged or not."""
    raw.send(encode_finish(opaque))
    assert raw.ping(f"after {opaque}") == f"after {opaque}".encode()


def test_the_drop_log_follows_the_level_set_at_run_time(
    gofast_log: tuple[logging.Logger, LogRecords],
) -> None:
    """ERROR hides the DEBUG line about a drop; lowering the level to DEBUG
    brings the next one back, and raising it hides them again, all on one
    live connection (pyo3-log caches loggers, not levels)."""
    logger, records = gofast_log
    with wire.raw_server(name="victim") as (raw, t):
        logger.setLevel(logging.ERROR)
        drop_one(raw, 4001)
        assert records.at(logging.DEBUG, "4001") == []

        logger.setLevel(logging.DEBUG)
        drop_one(raw, 4002)
        (line,) = records.at(logging.DEBUG, "4002")
        assert "gofast[victim]" in line and "dropped" in line

        logger.setLevel(logging.WARNING)
        drop_one(raw, 4003)
        assert records.at(logging.DEBUG, "4003") == []
        # All three were dropped and counted, whatever was logged.
        assert t.stats()["n_mdrops"] == 3


def test_logging_configured_after_import_takes_effect(
    gofast_log: tuple[logging.Logger, LogRecords],
) -> None:
    """The level may be set through the root logger (basicConfig style):
    a child's effective level is what counts, read at each record."""
    logger, records = gofast_log
    root = logging.getLogger()
    old_root = root.level
    logger.setLevel(logging.NOTSET)
    try:
        with wire.raw_server(name="victim") as (raw, _t):
            root.setLevel(logging.CRITICAL)
            drop_one(raw, 4011)
            root.setLevel(logging.DEBUG)
            drop_one(raw, 4012)
    finally:
        root.setLevel(old_root)
    assert records.at(logging.DEBUG, "4011") == []
    assert len(records.at(logging.DEBUG, "4012")) == 1


def test_a_connection_logs_connect_handshake_and_close_at_info(
    gofast_log: tuple[logging.Logger, LogRecords],
) -> None:
    logger, records = gofast_log
    logger.setLevel(logging.INFO)
    pair = make_pair(server_settings={"tags": "gzip"})
    try:
        pair.client.post(gofast.BinMessage(100, b"x" * 10), flush=True)
        local, remote = pair.client.local_address, pair.client.peer_address
        assert local and remote
    finally:
        pair.close()
    (connected,) = records.at(logging.INFO, "gofast[client]", "connected")
    assert f"local {local[0]}:{local[1]}" in connected, connected
    assert f"peer {remote[0]}:{remote[1]}" in connected, connected
    (hs,) = records.at(logging.INFO, "gofast[client]", "handshake")
    assert 'peer "server"' in hs and "version 1" in hs and 'tags "gzip,x-errors"' in hs, hs
    (closed,) = records.at(logging.INFO, "gofast[client]", "closed")
    st = pair.client.stats()
    # Its whoami request, its answer to the server's, and the POST at least.
    assert st["n_tx"] >= 3 and st["n_rx"] >= 2, st
    assert f"n_tx {st['n_tx']}, n_rx {st['n_rx']}" in closed, closed
    assert records.at(logging.INFO, "gofast[server]", "closed")
    # Nothing of an orderly connection logs above INFO.
    assert [r for r in records.records.snapshot() if r.levelno > logging.INFO] == []


def test_nothing_is_logged_per_message(gofast_log: tuple[logging.Logger, LogRecords]) -> None:
    """With every level on, a busy connection logs only its life events."""
    logger, records = gofast_log
    logger.setLevel(logging.DEBUG)
    got = Collector()

    def setup(t: gofast.Transport) -> None:
        t.subscribe(100, lambda s, m: got.append(m.data))

    pair = make_pair(server_setup=setup)
    try:
        before = len(records.records.snapshot())
        for i in range(200):
            pair.client.post(gofast.BinMessage(100, b"%d" % i))
        pair.client.flush()
        got.wait_for(200, TIMEOUT)
        assert records.records.snapshot()[before:] == []
    finally:
        pair.close()
