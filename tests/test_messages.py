"""What a caller reads when something is wrong says what happened, in the
caller's terms, and comes at once rather than after a timeout."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import gofast
from conftest import make_pair
from gofast import BinMessage


def test_after_our_close_calls_say_closed_by_this_side(pair_factory: Any) -> None:
    # The server holds the request: without x-errors (on by default, it
    # would answer a handler returning without a reply with a RemoteError).
    p = pair_factory(
        server_setup=lambda t: t.subscribe(100, lambda s, m: None),
        server_settings={"errors.extension": False},
    )
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(p.client.request, BinMessage(100, b"held"), None, 30)
        # the server holds it: wait until it is really in flight
        deadline = time.monotonic() + 10
        while p.client._exchanges_in_use()[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.002)
        p.client.close()
        with pytest.raises(gofast.ConnectionClosed, match="closed by this side"):
            pending.result(10)
    with pytest.raises(gofast.ConnectionClosed, match="closed by this side"):
        p.client.post(BinMessage(100, b"late"))


@pytest.mark.parametrize(
    "call",
    [
        lambda t: t.flush(),
        lambda t: t.subscribe(100, lambda s, m: None),
        lambda t: t.send_heartbeat(1.0),
        lambda t: t.flush_period(0.01),
        lambda t: t.default_handler(lambda s, m: None),
    ],
    ids=["flush", "subscribe", "send_heartbeat", "flush_period", "default_handler"],
)
def test_calls_on_a_closed_transport_raise(call: Any) -> None:
    p = make_pair()
    p.close()
    with pytest.raises(gofast.ConnectionClosed):
        call(p.client)


def test_a_stream_timeout_names_seconds_not_a_rust_option(pair_factory: Any) -> None:
    p = pair_factory(server_setup=lambda t: t.subscribe(100, lambda s, m: None))
    stream = p.client.stream(BinMessage(100, b"open"))
    with pytest.raises(gofast.Timeout) as err:
        stream.recv(timeout=0.05)
    assert str(err.value) == "no stream message within 0.05s"


def test_a_request_before_the_handshake_is_refused_at_once() -> None:
    p = make_pair(handshake=False)
    try:
        t0 = time.monotonic()
        with pytest.raises(gofast.UsageError, match="handshake"):
            p.client.request(BinMessage(100, b"x"), timeout=30)
        with pytest.raises(gofast.UsageError, match="handshake"):
            p.client.ping("x", timeout=30)
        with pytest.raises(gofast.UsageError, match="handshake"):
            p.client.request_many([BinMessage(100, b"x")], timeout=30)
        assert time.monotonic() - t0 < 1
    finally:
        p.close()


def test_a_handler_that_is_not_callable_is_refused(pair: Any) -> None:
    with pytest.raises(gofast.UsageError, match="callable"):
        pair.client.subscribe(100, 5)
    with pytest.raises(gofast.UsageError, match="callable"):
        pair.client.subscribe_batch(100, "handler")
    with pytest.raises(gofast.UsageError, match="callable"):
        pair.client.default_handler(3)


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"batchsize": True}, "batchsize"),
        ({"buffersize": 4096.5}, "buffersize"),
        ({"tags": "gzip,gzip"}, "tags"),
        ({"request.timeout": 0}, "request.timeout"),
        ({"streams.max": False}, "streams.max"),
    ],
)
def test_bad_settings_name_their_key(settings: dict[str, Any], key: str) -> None:
    with (
        socket.socket() as sock,
        pytest.raises(gofast.SettingsError, match=key.replace(".", r"\.")),
    ):
        gofast.Transport.from_socket(sock, settings=settings)


@pytest.mark.parametrize("version", [-1, 1 << 64, "1", True])
def test_a_bad_version_is_a_usage_error(version: Any) -> None:
    with socket.socket() as sock, pytest.raises(gofast.UsageError, match="version"):
        gofast.Transport.from_socket(sock, version=version)


def test_a_message_over_frame_max_is_refused_at_the_sender(pair_factory: Any) -> None:
    got: list[int] = []
    settings = {"frame.max": 64 * 1024, "buffersize": 4096}
    p = pair_factory(
        client_settings=settings,
        server_settings=settings,
        server_setup=lambda t: t.subscribe(100, lambda s, m: got.append(len(m.data))),
    )
    big = BinMessage(100, b"x" * (64 * 1024))
    for send in (
        lambda: p.client.post(big),
        lambda: p.client.request(big, timeout=5),
        lambda: p.client.stream(big),
    ):
        with pytest.raises(gofast.UsageError, match=r"frame\.max"):
            send()
    # the connection is fine: nothing was sent that the peer would refuse
    assert p.client.ping("still up", timeout=5) == "still up"
    p.client.post(BinMessage(100, b"y" * 60_000), flush=True)
    assert p.client.ping("after", timeout=5) == "after"
    assert got == [60_000]
