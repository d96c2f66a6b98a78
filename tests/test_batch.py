"""The batch API: request_many() pipelines requests; subscribe_batch()
hands a handler all POSTs of one read as one list."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import pytest

import gofast
from conftest import Collector, wait_until
from gofast import BinMessage

ECHO_ID, SILENT_ID, BATCH_ID, SINGLE_ID = 300, 301, 302, 303


@dataclass
class Item(gofast.CborMessage, id=304):
    n: int


def echo_server(t: gofast.Transport) -> None:
    t.subscribe(ECHO_ID, lambda s, m: s.respond(m) if s else None)
    t.subscribe(Item, lambda s, m: s.respond(m) if s else None)
    t.subscribe(SILENT_ID, lambda s, m: None)


def test_request_many_returns_responses_in_order(pair_factory: Any) -> None:
    p = pair_factory(server_setup=echo_server)
    msgs = [BinMessage(ECHO_ID, i.to_bytes(4, "big")) for i in range(2000)]
    assert p.client.request_many(msgs) == msgs
    assert p.client.stats()["n_txreq"] == 2000 + 1  # + whoami
    assert p.client._exchanges_in_use() == (0, 0)


def test_request_many_decodes_with_the_response_type(pair_factory: Any) -> None:
    p = pair_factory(server_setup=echo_server)
    assert p.client.request_many([Item(i) for i in range(50)], Item) == [Item(i) for i in range(50)]
    assert p.client.request_many([]) == []


def test_request_many_times_out_as_a_whole_and_quarantines_the_rest(pair_factory: Any) -> None:
    # A server without x-errors (as the Go reference): under it, the default,
    # SILENT_ID's handler returning without a reply would be a RemoteError.
    p = pair_factory(server_setup=echo_server, server_settings={"errors.extension": False})
    msgs = [BinMessage(ECHO_ID, b"a"), BinMessage(SILENT_ID, b"b"), BinMessage(SILENT_ID, b"c")]
    with pytest.raises(gofast.Timeout):
        p.client.request_many(msgs, timeout=0.3)
    # The answered one is done; the two unanswered wait for late replies.
    assert p.client._exchanges_in_use() == (2, 0)
    assert p.client.request(BinMessage(ECHO_ID, b"after")) == BinMessage(ECHO_ID, b"after")


def test_request_many_refuses_reserved_ids_before_sending(pair: Any) -> None:
    with pytest.raises(gofast.UsageError):
        pair.client.request_many([BinMessage(ECHO_ID, b""), BinMessage(0x1001, b"")])
    assert pair.client.stats()["n_txreq"] == 1  # only the handshake's whoami


def test_batch_handler_gets_every_post_once_in_order(pair_factory: Any) -> None:
    batches: list[list[BinMessage]] = []
    lock = threading.Lock()

    def on_batch(msgs: list[BinMessage]) -> None:
        with lock:
            batches.append(msgs)

    p = pair_factory(server_setup=lambda t: t.subscribe_batch(BATCH_ID, on_batch))
    n = 20_000
    p.client.post_many(BinMessage(BATCH_ID, i.to_bytes(4, "big")) for i in range(n))

    def total() -> int:
        with lock:
            return sum(len(b) for b in batches)

    wait_until(lambda: total() == n, what=f"{n} posts")
    got = [int.from_bytes(m.data, "big") for b in batches for m in b]
    assert got == list(range(n))
    assert len(batches) < n, "posts arriving together are delivered together"
    assert p.server.stats()["n_rxpost"] == n


def test_batch_and_single_handlers_keep_the_order_of_the_stream(pair_factory: Any) -> None:
    seen = Collector()

    def setup(t: gofast.Transport) -> None:
        t.subscribe_batch(BATCH_ID, lambda ms: [seen.append(("b", m.data)) for m in ms])
        t.subscribe(SINGLE_ID, lambda s, m: seen.append(("s", m.data)))

    p = pair_factory(server_setup=setup)
    sent = []
    for i in range(3000):
        kind = "b" if i % 7 else "s"
        data = i.to_bytes(4, "big")
        sent.append((kind, data))
        p.client.post(BinMessage(BATCH_ID if kind == "b" else SINGLE_ID, data))
    p.client.flush()
    assert seen.wait_for(len(sent)) == sent


def test_batch_handler_exception_is_counted_and_the_transport_goes_on(
    pair_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    got = Collector()

    def on_batch(msgs: list[BinMessage]) -> None:
        for m in msgs:
            if m.data == b"boom":
                raise RuntimeError("boom")
            got.append(m.data)

    def setup(t: gofast.Transport) -> None:
        t.subscribe_batch(BATCH_ID, on_batch)
        echo_server(t)

    p = pair_factory(server_setup=setup)
    p.client.post(BinMessage(BATCH_ID, b"boom"), flush=True)
    wait_until(lambda: p.server.stats()["n_handler_errors"] == 1, what="the error counted")
    p.client.post(BinMessage(BATCH_ID, b"fine"), flush=True)
    assert got.wait_for(1) == [b"fine"]
    assert any("batch handler" in r.getMessage() for r in caplog.records)


def test_subscribe_batch_refuses_reserved_ids(pair: Any) -> None:
    with pytest.raises(gofast.UsageError):
        pair.server.subscribe_batch(0x1003, lambda ms: None)
