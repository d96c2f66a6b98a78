"""The public API of one transport pair: handshake, settings, POST,
REQUEST/RESPONSE, built-ins, batching, compression, statistics and
handler failures."""

from __future__ import annotations

import gc
import logging
import os
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

import gofast
from conftest import echo, wait_until
from gofast import BinMessage

POST_ID = 200
ECHO_ID = 300
SILENT_ID = 301
OTHER_ID = 302
#: A side that sends no error replies, as the Go reference (x-errors is on by default).
NO_ERRORS_EXT = {"errors.extension": False}

KiB = 1024
MiB = 1024 * 1024
SIZES = [0, 1, 512, 60 * KiB, 1 * MiB]


def payload(size: int, compressible: bool = False) -> bytes:
    if compressible:
        line = b"the quick brown fox jumps over the lazy dog 0123456789\n"
        return (line * (size // len(line) + 1))[:size]
    return os.urandom(size)


def wait_idle(a: gofast.Transport, b: gofast.Transport, timeout: float = 10.0) -> None:
    """Waits until every byte and frame each side sent was counted by the other."""

    def idle() -> bool:
        sa, sb = a.stats(), b.stats()
        return (
            sa["n_txbyte"] == sb["n_rxbyte"]
            and sb["n_txbyte"] == sa["n_rxbyte"]
            and sa["n_tx"] == sb["n_rx"]
            and sb["n_tx"] == sa["n_rx"]
        )

    wait_until(idle, timeout, "both sides idle")


@pytest.fixture
def transports() -> Iterator[list[gofast.Transport]]:
    """Transports a test makes by hand; closed at teardown."""
    made: list[gofast.Transport] = []
    yield made
    for t in made:
        t.close()


def connect(
    made: list[gofast.Transport],
    client_kw: dict[str, Any] | None = None,
    server_kw: dict[str, Any] | None = None,
) -> tuple[gofast.Transport, gofast.Transport]:
    """A connected (not handshaken) dialing and accepting transport."""
    with gofast.listen(("127.0.0.1", 0)) as lis:
        with ThreadPoolExecutor(1) as pool:
            accepted = pool.submit(lis.accept, timeout=10, **(server_kw or {}))
            client = gofast.Transport.connect(lis.address, **(client_kw or {}))
            made.append(client)
            server = accepted.result(timeout=10)
            made.append(server)
    return client, server


def handshake(
    client: gofast.Transport, server: gofast.Transport
) -> tuple[gofast.Whoami, gofast.Whoami]:
    """Handshakes both; returns (what the client got, what the server got)."""
    with ThreadPoolExecutor(1) as pool:
        theirs = pool.submit(server.handshake, 10.0)
        ours = client.handshake(10.0)
        return ours, theirs.result(timeout=10)


@dataclass
class Query(gofast.CborMessage, id=400):
    key: str
    limit: int


@dataclass
class Reply(gofast.CborMessage, id=401):
    key: str
    values: list[int]
    note: str | None = None


# ---- handshake -----------------------------------------------------------------


def test_handshake_returns_the_peers_whoami_and_version(
    transports: list[gofast.Transport],
) -> None:
    client, server = connect(
        transports,
        client_kw={
            "name": "alice",
            "version": gofast.Version64(7),
            "settings": {"buffersize": 32 * KiB, "tags": "gzip,lzw"},
        },
        server_kw={"name": "bob", "version": 42, "settings": {"tags": "lzw"}},
    )
    assert client.peer is None and client.peer_version is None
    got_by_client, got_by_server = handshake(client, server)

    default_buffersize = gofast.default_settings(dialed=False)["buffersize"]
    # The tags are each side's encodings, then x-errors (on by default).
    assert got_by_client == gofast.Whoami(
        "bob", gofast.Version64(42), default_buffersize, ("lzw", "x-errors")
    )
    assert got_by_server == gofast.Whoami(
        "alice", gofast.Version64(7), 32 * KiB, ("gzip", "lzw", "x-errors")
    )
    assert client.peer == got_by_client and server.peer == got_by_server
    assert client.peer_version == gofast.Version64(42)
    assert server.peer_version == gofast.Version64(7)
    assert client.name == "alice" and server.name == "bob"
    assert client.peer_address == server.local_address
    assert server.peer_address == client.local_address


def test_whoami_asks_the_peer_again(pair: Any) -> None:
    assert pair.client.whoami(timeout=5) == pair.client.peer
    assert pair.server.whoami(timeout=5) == pair.server.peer
    assert pair.client.whoami().name == "server"


# ---- settings ----------------------------------------------------------------------


def test_settings_merge_over_the_defaults(transports: list[gofast.Transport]) -> None:
    given = {"batchsize": 7, "tags": "gzip", "request.timeout": 2.5, "chansize": 100000}
    client, server = connect(transports, client_kw={"settings": given})
    want = gofast.default_settings(True)
    want.update({"batchsize": 7, "tags": "gzip", "request.timeout": 2.5})
    assert client.settings == want
    assert server.settings == gofast.default_settings(False)


def test_default_settings_is_a_fresh_dict_each_time() -> None:
    d = gofast.default_settings()
    d["batchsize"] = 999
    assert gofast.default_settings()["batchsize"] != 999
    assert set(d) == set(gofast.default_settings(False))


@pytest.mark.parametrize(
    "bad",
    [
        {"no.such.setting": 1},
        {"batchsize": 0},
        {"batchsize": -1},
        {"batchsize": "ten"},
        {"opaque.start": 100},
        {"opaque.start": 20000, "opaque.end": 10000},
        {"opaque.end": 15309736},
        {"opaque.start": 1001, "opaque.end": 1003},
        {"tags": "zstd"},
        {"tags": "gzip,snappy"},
        {"gzip.level": 10},
        {"frame.max": 100},
        {"pending.max": 1000},
        {"buffersize": 10},
        {"flush.period": 0},
        {"flush.period": -1.0},
        {"flush.period": float("nan")},
        {"request.timeout": -1},
        {"request.timeout": "soon"},
    ],
    ids=repr,
)
def test_bad_settings_raise_settings_error(bad: dict[str, Any]) -> None:
    with gofast.listen(("127.0.0.1", 0)) as lis:
        with pytest.raises(gofast.SettingsError) as err:
            gofast.Transport.connect(lis.address, settings=bad)
    assert isinstance(err.value, ValueError)


def test_bad_periods_raise_settings_error(pair: Any) -> None:
    for bad in (0, -1.0):
        with pytest.raises(gofast.SettingsError):
            pair.client.flush_period(bad)
        with pytest.raises(gofast.SettingsError):
            pair.client.send_heartbeat(bad)


def test_default_opaque_ranges_avoid_each_other_and_the_reference() -> None:
    dial, accept = gofast.default_settings(True), gofast.default_settings(False)
    ranges = [
        range(dial["opaque.start"], dial["opaque.end"] + 1),
        range(accept["opaque.start"], accept["opaque.end"] + 1),
        range(1000, 5001),  # the Go reference's default on both sides
    ]
    for i, a in enumerate(ranges):
        assert len(a) > 0
        for b in ranges[i + 1 :]:
            assert a.stop <= b.start or b.stop <= a.start, f"{a} overlaps {b}"


def test_pair_with_default_settings_uses_the_two_ranges(pair: Any) -> None:
    assert pair.client.settings["opaque.start"] == gofast.default_settings(True)["opaque.start"]
    assert pair.server.settings["opaque.start"] == gofast.default_settings(False)["opaque.start"]


# ---- POST ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_post_reaches_the_handler_with_no_stream_and_exact_bytes(
    pair_factory: Any, collector: Any, size: int
) -> None:
    p = pair_factory(
        server_setup=lambda t: t.subscribe(POST_ID, lambda s, m: collector.append((s, m)))
    )
    data = payload(size)
    p.client.post(BinMessage(POST_ID, data), flush=True)
    [(stream, msg)] = collector.wait_for(1)
    assert stream is None
    assert isinstance(msg, BinMessage)
    assert msg.id == POST_ID and msg.ID == POST_ID
    assert type(msg.data) is bytes and msg.data == data and len(msg) == size


def test_post_from_the_accepting_side(pair_factory: Any, collector: Any) -> None:
    p = pair_factory(client_setup=lambda t: t.subscribe(POST_ID, lambda s, m: collector.append(m)))
    p.server.post(BinMessage(POST_ID, b"from server"), flush=True)
    assert collector.wait_for(1)[0].data == b"from server"


def test_post_many_sends_every_message_in_order(pair_factory: Any, collector: Any) -> None:
    p = pair_factory(server_setup=lambda t: t.subscribe(POST_ID, lambda s, m: collector.append(m)))
    assert p.client.post_many([]) == 0
    n = p.client.post_many(BinMessage(POST_ID, i.to_bytes(2, "big")) for i in range(500))
    assert n == 500
    got = collector.wait_for(500)
    assert [int.from_bytes(m.data, "big") for m in got] == list(range(500))
    wait_idle(p.client, p.server)
    assert p.client.stats()["n_txpost"] == 500
    assert p.server.stats()["n_rxpost"] == 500


def test_default_handler_gets_unsubscribed_ids(pair_factory: Any, collector: Any) -> None:
    def setup(t: gofast.Transport) -> None:
        t.subscribe(POST_ID, lambda s, m: collector.append(("subscribed", m.id)))
        t.default_handler(lambda s, m: collector.append(("default", m.id)))

    p = pair_factory(server_setup=setup)
    for i in (POST_ID, 7, 1 << 63, POST_ID):
        p.client.post(BinMessage(i, b""), flush=True)
    assert collector.wait_for(4) == [
        ("subscribed", POST_ID),
        ("default", 7),
        ("default", 1 << 63),
        ("subscribed", POST_ID),
    ]


def test_default_handler_can_answer_requests(pair_factory: Any) -> None:
    p = pair_factory(server_setup=lambda t: t.default_handler(echo))
    reply = p.client.request(BinMessage(12345, b"anything"), timeout=5)
    assert reply == BinMessage(12345, b"anything")


def test_a_message_without_handler_is_dropped_and_counted(
    pair_factory: Any, collector: Any
) -> None:
    p = pair_factory(server_setup=lambda t: t.subscribe(POST_ID, lambda s, m: collector.append(m)))
    before = p.server.stats()
    p.client.post(BinMessage(OTHER_ID, b"nobody listens"), flush=True)
    p.client.post(BinMessage(POST_ID, b"after"), flush=True)
    # The reader handles frames in order: the drop is counted before "after" arrives.
    assert [m.data for m in collector.wait_for(1)] == [b"after"]
    after = p.server.stats()
    assert after["n_mdrops"] == before["n_mdrops"] + 1
    assert after["n_dropped"] > before["n_dropped"]
    assert after["n_handler_errors"] == 0


# ---- REQUEST / RESPONSE ----------------------------------------------------------


def test_request_returns_the_response_as_binmessage(pair_factory: Any) -> None:
    def answer(stream: gofast.Stream | None, msg: BinMessage) -> None:
        assert stream is not None and stream.is_request
        stream.respond(BinMessage(OTHER_ID, msg.data[::-1]))

    p = pair_factory(server_setup=lambda t: t.subscribe(ECHO_ID, answer))
    reply = p.client.request(BinMessage(ECHO_ID, b"abc"), timeout=5)
    assert isinstance(reply, BinMessage)
    assert reply.id == OTHER_ID and reply.data == b"cba"


@pytest.mark.parametrize("size", SIZES)
def test_request_round_trips_every_payload_size(pair_factory: Any, size: int) -> None:
    p = pair_factory(server_setup=lambda t: t.subscribe(ECHO_ID, echo))
    data = payload(size)
    assert p.client.request(BinMessage(ECHO_ID, data), timeout=10).data == data


def test_request_decodes_with_response_type_cbor_dataclasses(pair_factory: Any) -> None:
    def answer(stream: gofast.Stream | None, msg: BinMessage) -> None:
        q = msg.decode(Query)
        assert isinstance(q, Query)
        assert stream is not None
        stream.respond(Reply(q.key, list(range(q.limit)), note="é ✓"))

    p = pair_factory(server_setup=lambda t: t.subscribe(Query, answer))
    reply = p.client.request(Query("k1", 5), Reply, timeout=5)
    assert reply == Reply("k1", [0, 1, 2, 3, 4], "é ✓")
    assert p.client.request(Query("k2", 0), Reply) == Reply("k2", [], "é ✓")
    assert Query.decode(Query("x", 1).encode()) == Query("x", 1)


def test_response_of_another_type_raises_protocol_error(pair_factory: Any) -> None:
    # The handler answers a Query with a Query: decoding it as a Reply would
    # build a Reply from a Query's fields (or fail somewhere inside decode).
    def wrong(stream: gofast.Stream | None, msg: BinMessage) -> None:
        assert stream is not None
        stream.respond(msg)

    p = pair_factory(server_setup=lambda t: t.subscribe(Query, wrong))
    with pytest.raises(gofast.ProtocolError, match=r"message id 400 \(0x190\).*Reply has ID 401"):
        p.client.request(Query("k", 1), Reply, timeout=5)
    with pytest.raises(gofast.ProtocolError, match=r"message id 400 .*Reply has ID 401"):
        p.client.request_many([Query("a", 1), Query("b", 2)], Reply, timeout=5)
    # Without a type the response comes as it is; the connection carries on.
    assert p.client.request(Query("k", 1), timeout=5) == BinMessage(400, Query("k", 1).encode())
    assert p.client.request_many([Query("c", 3)], Query, timeout=5) == [Query("c", 3)]


@dataclass
class LookAlike(gofast.CborMessage, id=402):
    """Query's fields under another id: its bytes would decode as one."""

    key: str
    limit: int


def test_decode_refuses_a_type_with_another_id() -> None:
    msg = BinMessage(Query.ID, Query("k", 1).encode())
    assert msg.decode(Query) == Query("k", 1)
    with pytest.raises(gofast.ProtocolError, match=r"LookAlike has ID 402"):
        msg.decode(LookAlike)
    with pytest.raises(
        gofast.ProtocolError, match=r"message id 400 \(0x190\), but Reply has ID 401 \(0x191\)"
    ):
        msg.decode(Reply)


def test_respond_twice_raises_usage_error(pair_factory: Any, collector: Any) -> None:
    def answer(stream: gofast.Stream | None, msg: BinMessage) -> None:
        assert stream is not None
        stream.respond(BinMessage(ECHO_ID, b"first"))
        try:
            stream.respond(BinMessage(ECHO_ID, b"second"))
        except Exception as e:  # noqa: BLE001 - the test inspects it
            collector.append(e)
        else:
            collector.append(None)

    p = pair_factory(server_setup=lambda t: t.subscribe(ECHO_ID, answer))
    before = p.server.stats()["n_txresp"]
    assert p.client.request(BinMessage(ECHO_ID, b"q"), timeout=5).data == b"first"
    [err] = collector.wait_for(1)
    assert isinstance(err, gofast.UsageError)
    assert p.server.stats()["n_txresp"] == before + 1


def test_stream_methods_on_a_request_are_usage_errors(pair_factory: Any, collector: Any) -> None:
    def answer(stream: gofast.Stream | None, msg: BinMessage) -> None:
        assert stream is not None
        with pytest.raises(gofast.UsageError):
            stream.send(msg)
        collector.append("send refused")
        with pytest.raises(gofast.UsageError):
            stream.close()
        collector.append("close refused")
        stream.respond(msg)

    p = pair_factory(server_setup=lambda t: t.subscribe(ECHO_ID, answer))
    assert p.client.request(BinMessage(ECHO_ID, b"q"), timeout=5).data == b"q"
    assert collector.wait_for(2) == ["send refused", "close refused"]


def test_request_timeout_raises_timeout_and_counts(pair_factory: Any, collector: Any) -> None:
    def setup(t: gofast.Transport) -> None:
        t.subscribe(SILENT_ID, lambda s, m: collector.append(s))  # answers later
        t.subscribe(ECHO_ID, echo)

    # A server without x-errors (as the Go reference): under it, a handler
    # returning without a reply would be a RemoteError, not a timeout.
    p = pair_factory(server_setup=setup, server_settings=NO_ERRORS_EXT)
    t0 = time.monotonic()
    with pytest.raises(gofast.Timeout) as err:
        p.client.request(BinMessage(SILENT_ID, b"q"), timeout=0.2)
    elapsed = time.monotonic() - t0
    assert isinstance(err.value, TimeoutError)
    assert 0.2 <= elapsed < 5
    assert p.client.stats()["n_timeouts"] == 1

    # The answer that comes too late is dropped, not given to a newer request.
    [late] = collector.wait_for(1)
    late.respond(BinMessage(SILENT_ID, b"late"))
    assert p.client.request(BinMessage(ECHO_ID, b"fresh"), timeout=5).data == b"fresh"
    assert p.client.stats()["n_mdrops"] == 1


def test_request_timeout_setting_is_the_default_timeout(pair_factory: Any) -> None:
    p = pair_factory(
        client_settings={"request.timeout": 0.2},
        server_setup=lambda t: t.subscribe(SILENT_ID, lambda s, m: None),
        server_settings=NO_ERRORS_EXT,  # else a RemoteError at once, as above
    )
    t0 = time.monotonic()
    with pytest.raises(gofast.Timeout):
        p.client.request(BinMessage(SILENT_ID, b"q"))
    assert 0.2 <= time.monotonic() - t0 < 5
    assert p.client.stats()["n_timeouts"] == 1


# ---- refused messages ------------------------------------------------------------


REFUSED_IDS = [0, *range(0x1000, 0x1010)]


@pytest.mark.parametrize("bad_id", REFUSED_IDS, ids=hex)
def test_reserved_ids_and_id_zero_are_refused(
    pair_factory: Any, collector: Any, bad_id: int
) -> None:
    def answer(stream: gofast.Stream | None, msg: BinMessage) -> None:
        assert stream is not None
        try:
            stream.respond(BinMessage(bad_id, b""))
        except gofast.UsageError as e:
            collector.append(e)
        stream.respond(msg)

    p = pair_factory(server_setup=lambda t: t.subscribe(ECHO_ID, answer))
    bad = BinMessage(bad_id, b"x")
    with pytest.raises(gofast.UsageError):
        p.client.post(bad, flush=True)
    with pytest.raises(gofast.UsageError):
        p.client.request(bad, timeout=1)
    with pytest.raises(gofast.UsageError):
        p.client.stream(bad, lambda m: None)
    with pytest.raises(gofast.UsageError):
        p.client.post_many([bad])
    with pytest.raises(gofast.UsageError):
        p.client.subscribe(bad_id, echo)

    # Answering with a reserved id is refused too, and nothing leaked.
    assert p.client.request(BinMessage(ECHO_ID, b"ok"), timeout=5).data == b"ok"
    assert isinstance(collector.wait_for(1)[0], gofast.UsageError)
    assert p.client._exchanges_in_use() == (0, 0)
    assert p.client.stats()["n_txpost"] == 0 and p.client.stats()["n_txstart"] == 0


def test_cbor_message_with_reserved_id_is_refused() -> None:
    with pytest.raises(gofast.UsageError):

        @dataclass
        class Bad(gofast.CborMessage, id=0x1001):
            x: int


class NoEncode:
    ID = 100


class StrEncode:
    ID = 100

    def encode(self) -> str:
        return "not bytes"


class BadID:
    ID = "one hundred"

    def encode(self) -> bytes:
        return b""


@pytest.mark.parametrize(
    "obj",
    [object(), "text", b"bytes", 42, None, NoEncode(), StrEncode(), BadID()],
    ids=lambda o: type(o).__name__,
)
def test_objects_that_are_not_messages_raise_type_error(pair: Any, obj: object) -> None:
    with pytest.raises(TypeError):
        pair.client.post(obj)
    with pytest.raises(TypeError):
        pair.client.request(obj, timeout=1)
    with pytest.raises(TypeError):
        pair.client.stream(obj, lambda m: None)
    with pytest.raises(TypeError):
        pair.client.post_many([BinMessage(POST_ID, b""), obj])
    assert pair.client._exchanges_in_use() == (0, 0)


# ---- built-ins --------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "hello", "héllo ✓ 世界", "x" * 60000])
def test_ping_echoes(pair: Any, text: str) -> None:
    assert pair.client.ping(text, timeout=5) == text
    assert pair.server.ping(text, timeout=5) == text


def test_ping_text_too_long_for_the_protocol_is_refused(pair: Any) -> None:
    # The echo's length travels in 2 bytes: 65535 UTF-8 bytes at most.
    assert len(pair.client.ping("x" * 65535, timeout=5)) == 65535
    for text in ("x" * 65536, "é" * 40000):
        with pytest.raises(gofast.UsageError):
            pair.client.ping(text, timeout=5)
    assert pair.client._exchanges_in_use() == (0, 0)


def test_silent_since_tracks_heartbeats(pair: Any) -> None:
    assert pair.client.silent_since() is None
    pair.server.send_heartbeat(0.05)
    wait_until(lambda: pair.client.stats()["n_rxbeats"] >= 2, what="two heartbeats")
    since = pair.client.silent_since()
    assert since is not None and 0 <= since < 1.0
    pair.server.send_heartbeat(None)
    assert pair.server.silent_since() is None  # the client sent none


# ---- batching and flushing ------------------------------------------------------------


def test_flush_period_delivers_a_partial_batch(pair_factory: Any, collector: Any) -> None:
    p = pair_factory(
        client_settings={"batchsize": 100, "flush.period": 0.01},
        server_setup=lambda t: t.subscribe(POST_ID, lambda s, m: collector.append(m.data)),
    )
    for i in range(3):
        p.client.post(BinMessage(POST_ID, bytes([i])), flush=False)
    assert collector.wait_for(3, timeout=5) == [b"\x00", b"\x01", b"\x02"]


def test_flush_period_can_be_set_after_construction(pair_factory: Any, collector: Any) -> None:
    p = pair_factory(
        client_settings={"batchsize": 100, "flush.period": None},
        server_setup=lambda t: t.subscribe(POST_ID, lambda s, m: collector.append(m.data)),
    )
    p.client.flush_period(0.01)
    for i in range(3):
        p.client.post(BinMessage(POST_ID, bytes([i])), flush=False)
    assert collector.wait_for(3, timeout=5) == [b"\x00", b"\x01", b"\x02"]


def test_post_with_flush_true_goes_out_without_a_flush_period(
    pair_factory: Any, collector: Any
) -> None:
    p = pair_factory(
        client_settings={"batchsize": 100, "flush.period": None},
        server_setup=lambda t: t.subscribe(POST_ID, lambda s, m: collector.append(m.data)),
    )
    p.client.post(BinMessage(POST_ID, b"now"), flush=True)
    assert collector.wait_for(1, timeout=5) == [b"now"]


def test_flush_sends_what_is_queued(pair_factory: Any, collector: Any) -> None:
    p = pair_factory(
        client_settings={"batchsize": 100, "flush.period": None},
        server_setup=lambda t: t.subscribe(POST_ID, lambda s, m: collector.append(m.data)),
    )
    for i in range(3):
        p.client.post(BinMessage(POST_ID, bytes([i])), flush=False)
    p.client.flush()
    assert len(collector.wait_for(3, timeout=5)) == 3


def test_a_full_batch_goes_out_by_itself(pair_factory: Any, collector: Any) -> None:
    p = pair_factory(
        client_settings={"batchsize": 10, "flush.period": None},
        server_setup=lambda t: t.subscribe(POST_ID, lambda s, m: collector.append(m.data)),
    )
    for i in range(10):
        p.client.post(BinMessage(POST_ID, bytes([i])), flush=False)
    assert collector.wait_for(10, timeout=5) == [bytes([i]) for i in range(10)]


# ---- compression ------------------------------------------------------------------------

TAG_PAIRS = [
    ("", ""),
    ("gzip", ""),
    ("", "gzip"),
    ("lzw", ""),
    ("", "lzw"),
    ("gzip", "gzip"),
    ("lzw", "lzw"),
    ("gzip", "lzw"),
    ("gzip,lzw", ""),
    ("", "gzip,lzw"),
    ("gzip,lzw", "lzw,gzip"),
]


@pytest.mark.parametrize(("client_tags", "server_tags"), TAG_PAIRS, ids=repr)
def test_compressed_payloads_arrive_intact(
    pair_factory: Any, collector: Any, client_tags: str, server_tags: str
) -> None:
    p = pair_factory(
        client_settings={"tags": client_tags},
        server_settings={"tags": server_tags},
        server_setup=lambda t: t.subscribe(ECHO_ID, echo),
        client_setup=lambda t: t.subscribe(POST_ID, lambda s, m: collector.append(m.data)),
    )
    assert p.client.peer.tags == (*(t for t in server_tags.split(",") if t), "x-errors")
    sent = []
    for size in SIZES:
        for compressible in (False, True):
            data = payload(size, compressible)
            # client -> server with the server's tags, back with the client's
            assert p.client.request(BinMessage(ECHO_ID, data), timeout=20).data == data
            p.server.post(BinMessage(POST_ID, data), flush=True)
            sent.append(data)
    assert collector.wait_for(len(sent), timeout=20) == sent
    assert p.client.stats()["n_mdrops"] == 0 and p.server.stats()["n_mdrops"] == 0


def _wire_bytes_of_one_post(pair_factory: Any, collector: Any, server_tags: str) -> int:
    p = pair_factory(
        server_settings={"tags": server_tags},
        server_setup=lambda t: t.subscribe(POST_ID, lambda s, m: collector.append(m.data)),
    )
    wait_idle(p.client, p.server)
    before: int = p.client.stats()["n_txbyte"]
    data = payload(100 * KiB, compressible=True)
    n = len(collector.items)
    p.client.post(BinMessage(POST_ID, data), flush=True)
    assert collector.wait_for(n + 1)[-1] == data
    wait_idle(p.client, p.server)
    after: int = p.client.stats()["n_txbyte"]
    return after - before


@pytest.mark.parametrize("tags", ["gzip", "lzw", "gzip,lzw"])
def test_compression_makes_compressible_data_smaller_on_the_wire(
    pair_factory: Any, collector: Any, tags: str
) -> None:
    plain = _wire_bytes_of_one_post(pair_factory, collector, "")
    packed = _wire_bytes_of_one_post(pair_factory, collector, tags)
    assert plain > 100 * KiB
    assert packed < plain / 4, f"{tags}: {packed} bytes on the wire vs {plain} plain"


# ---- statistics -------------------------------------------------------------------------------


def test_stats_keys_are_stat_names(pair: Any) -> None:
    assert list(pair.client.stats()) == list(gofast.STAT_NAMES)
    assert set(gofast.stats()) == set(gofast.STAT_NAMES)
    for name in ("n_tx", "n_rxbyte", "n_dropped", "n_mdrops", "n_handler_errors", "n_timeouts"):
        assert name in gofast.STAT_NAMES


def test_stats_agree_across_the_pair(pair_factory: Any, collector: Any) -> None:
    def stream_handler(stream: gofast.Stream | None, msg: BinMessage) -> Any:
        assert stream is not None
        for i in range(3):
            stream.send(BinMessage(POST_ID, bytes([i])))

        def on_msg(m: BinMessage | None) -> None:
            if m is None:
                stream.close()

        return on_msg

    def setup(t: gofast.Transport) -> None:
        t.subscribe(POST_ID, lambda s, m: None)
        t.subscribe(ECHO_ID, echo)
        t.subscribe(OTHER_ID, stream_handler)

    p = pair_factory(server_setup=setup)
    for _ in range(10):
        p.client.post(BinMessage(POST_ID, b"p"), flush=True)
    for _ in range(5):
        p.client.request(BinMessage(ECHO_ID, b"r"), timeout=5)
    p.client.ping("x")
    s = p.client.stream(BinMessage(OTHER_ID, b"s"), collector.append)
    for _ in range(4):
        s.send(BinMessage(POST_ID, b"m"), flush=True)
    assert collector.wait_for(3)
    s.close()
    assert collector.wait_for(4)[-1] is None
    wait_until(lambda: p.server._exchanges_in_use() == (0, 0), what="stream released")
    wait_idle(p.client, p.server)

    c, sv = p.client.stats(), p.server.stats()
    assert c["n_txpost"] == sv["n_rxpost"] == 10
    assert c["n_txreq"] == sv["n_rxreq"] == 5 + 1 + 1  # requests, ping, whoami
    assert sv["n_txresp"] == c["n_rxresp"] == 7
    assert c["n_txstart"] == sv["n_rxstart"] == 1
    assert c["n_txstream"] == sv["n_rxstream"] == 4
    assert sv["n_txstream"] == c["n_rxstream"] == 3
    assert c["n_txfin"] == sv["n_rxfin"] == 1
    assert sv["n_txfin"] == c["n_rxfin"] == 1
    for a, b in ((c, sv), (sv, c)):
        assert a["n_tx"] == b["n_rx"]
        assert a["n_txbyte"] == b["n_rxbyte"] > 0
        assert a["n_dropped"] == a["n_mdrops"] == a["n_handler_errors"] == a["n_timeouts"] == 0
        assert a["n_flushes"] >= 1


def test_module_stats_sum_live_transports_by_name(transports: list[gofast.Transport]) -> None:
    name = f"stats-{uuid.uuid4().hex}"
    pairs = []
    for i in range(2):
        client, server = connect(
            transports, client_kw={"name": name}, server_kw={"name": f"{name}-server-{i}"}
        )
        server.subscribe(POST_ID, lambda s, m: None)
        handshake(client, server)
        for _ in range(3 + i):
            client.post(BinMessage(POST_ID, b"x"), flush=True)
        pairs.append((client, server))
    for client, server in pairs:
        wait_idle(client, server)

    mine = [c.stats() for c, _ in pairs]
    summed = gofast.stats(name)
    assert set(summed) == set(gofast.STAT_NAMES)
    assert summed == {k: mine[0][k] + mine[1][k] for k in gofast.STAT_NAMES}
    assert summed["n_txpost"] == 7
    everything = gofast.stats()
    assert all(everything[k] >= summed[k] for k in gofast.STAT_NAMES)
    assert all(v == 0 for v in gofast.stats(f"no-such-{uuid.uuid4().hex}").values())

    # A transport that is gone no longer counts.
    gone, _ = pairs.pop(0)
    gone.close()
    transports.remove(gone)
    del gone, mine
    gc.collect()
    assert gofast.stats(name) == pairs[0][0].stats()


# ---- handler failures -----------------------------------------------------------------------


def test_handler_exception_is_logged_counted_and_survived(
    pair_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="gofast")

    def boom(stream: gofast.Stream | None, msg: BinMessage) -> None:
        raise ValueError("boom in handler")

    def setup(t: gofast.Transport) -> None:
        t.subscribe(POST_ID, boom)
        t.subscribe(ECHO_ID, echo)

    p = pair_factory(server_setup=setup)
    p.client.post(BinMessage(POST_ID, b"x"), flush=True)
    # Handled in order on the server's reader: the failure came first.
    assert p.client.request(BinMessage(ECHO_ID, b"still works"), timeout=5).data == b"still works"
    assert p.server.stats()["n_handler_errors"] == 1
    records = [r for r in caplog.records if r.name == "gofast" and r.exc_info]
    assert len(records) == 1
    rec = records[0]
    assert rec.levelno == logging.ERROR
    assert rec.exc_info is not None and rec.exc_info[0] is ValueError
    assert "boom in handler" in str(rec.exc_info[1])
    assert "server" in rec.getMessage()


def test_stream_callback_exception_is_logged_and_counted(
    pair_factory: Any, collector: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="gofast")

    def handler(stream: gofast.Stream | None, msg: BinMessage) -> Any:
        assert stream is not None

        def on_msg(m: BinMessage | None) -> None:
            if m is None:
                stream.close()
                collector.append(None)
                return
            raise RuntimeError("callback failed")

        return on_msg

    p = pair_factory(server_setup=lambda t: t.subscribe(OTHER_ID, handler))
    s = p.client.stream(BinMessage(OTHER_ID, b""), lambda m: None)
    s.send(BinMessage(OTHER_ID, b"1"), flush=True)
    s.send(BinMessage(OTHER_ID, b"2"), flush=True)
    s.close()
    collector.wait_for(1)
    assert p.server.stats()["n_handler_errors"] == 2
    assert sum(1 for r in caplog.records if r.exc_info and r.exc_info[0] is RuntimeError) == 2
    assert p.client.ping("alive", timeout=5) == "alive"
