"""The x-errors extension (docs/protocol.md §9), on by default: with both
sides advertising it, a failed REQUEST or STREAM-START reaches the caller as
RemoteError at once; with either side without it (a Go peer, or
``errors.extension: False``), nothing changes on the wire."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cbor2
import pytest

import gofast
import wire
from conftest import Pair, wait_until
from gofast import BinMessage

FAIL_ID, SILENT_ID, ECHO_ID, GEN_ID, UNKNOWN_ID = 400, 401, 402, 403, 499
ERROR_ID = 0x1004
EXT = {"errors.extension": True}
OFF = {"errors.extension": False}


def failing(stream: Any, msg: BinMessage) -> None:
    raise ValueError("bad input: " + msg.data.decode())


def silent(stream: Any, msg: BinMessage) -> None:
    return None


def echo(stream: Any, msg: BinMessage) -> BinMessage:
    return msg


def gen_then_fail(stream: Any, msg: BinMessage) -> Iterator[BinMessage]:
    yield BinMessage(GEN_ID, b"one")
    raise KeyError("gone")


def setup(t: Any) -> None:
    t.subscribe(FAIL_ID, failing).subscribe(SILENT_ID, silent)
    t.subscribe(ECHO_ID, echo).subscribe(GEN_ID, gen_then_fail)


def both_on(pair_factory: Any) -> Pair:
    p: Pair = pair_factory(server_setup=setup, client_settings=EXT, server_settings=EXT)
    return p


def remote_error(call: Any) -> gofast.RemoteError:
    start = time.monotonic()
    with pytest.raises(gofast.RemoteError) as info:
        call()
    # At once, not at the request's 30 s timeout.
    assert time.monotonic() - start < 10
    return info.value


def test_the_extension_is_on_by_default_and_takes_a_bool() -> None:
    assert gofast.default_settings(dialed=True)["errors.extension"] is True
    assert gofast.default_settings(dialed=False)["errors.extension"] is True
    with gofast.listen(("127.0.0.1", 0)) as lis, pytest.raises(gofast.SettingsError):
        gofast.Transport.connect(lis.address, settings={"errors.extension": "yes"})


def test_default_peers_raise_remote_error_for_every_failed_request(pair_factory: Any) -> None:
    """Two peers with default settings, as a new user has them: a raising
    handler, a missing one and one returning without a reply each raise
    RemoteError (on the old default, off, each waited out its timeout)."""
    p: Pair = pair_factory(server_setup=setup)
    assert p.client.peer.tags == ("x-errors",) and p.server.peer.tags == ("x-errors",)
    got = []
    for msg_id in (FAIL_ID, UNKNOWN_ID, SILENT_ID):
        with pytest.raises(gofast.RemoteError) as info:
            p.client.request(BinMessage(msg_id, b"x"), timeout=30)
        got.append(info.value.remote_type)
    assert got == ["ValueError", "NoHandler", "NoResponse"]
    assert p.client.stats()["n_timeouts"] == 0
    assert p.client.request(BinMessage(ECHO_ID, b"ok"), timeout=10).data == b"ok"


def test_a_raising_handler_raises_remote_error(pair_factory: Any) -> None:
    p = both_on(pair_factory)
    e = remote_error(lambda: p.client.request(BinMessage(FAIL_ID, b"x"), timeout=30))
    assert (e.remote_type, e.remote_message) == ("ValueError", "bad input: x")
    assert isinstance(e, gofast.GofastError)
    # The connection goes on.
    assert p.client.request(BinMessage(ECHO_ID, b"ok"), timeout=10).data == b"ok"


def test_request_many_raises_for_the_first_failed_reply(pair_factory: Any) -> None:
    p = both_on(pair_factory)
    msgs = [BinMessage(ECHO_ID, b"a"), BinMessage(FAIL_ID, b"b"), BinMessage(ECHO_ID, b"c")]
    e = remote_error(lambda: p.client.request_many(msgs, timeout=30))
    assert e.remote_type == "ValueError"
    got = p.client.request_many([BinMessage(ECHO_ID, b"d")], timeout=10)
    assert [m.data for m in got] == [b"d"]


def test_no_handler_and_no_reply_raise_remote_error(pair_factory: Any) -> None:
    p = both_on(pair_factory)
    e = remote_error(lambda: p.client.request(BinMessage(UNKNOWN_ID, b""), timeout=30))
    assert e.remote_type == "NoHandler" and str(UNKNOWN_ID) in e.remote_message
    e = remote_error(lambda: p.client.request(BinMessage(SILENT_ID, b""), timeout=30))
    assert e.remote_type == "NoResponse" and str(SILENT_ID) in e.remote_message


def test_a_failed_stream_start_ends_the_openers_stream(pair_factory: Any) -> None:
    p = both_on(pair_factory)
    for msg_id, want in ((FAIL_ID, "ValueError"), (UNKNOWN_ID, "NoHandler")):
        s = p.client.stream(BinMessage(msg_id, b"s"))
        with pytest.raises(gofast.RemoteError) as info:
            list(s)
        assert info.value.remote_type == want
        assert isinstance(s.error, gofast.RemoteError)
        s.close()
    # A generator that raises after a yield: the yield arrives, then the error.
    s = p.client.stream(BinMessage(GEN_ID, b""))
    first = s.recv(timeout=10)
    assert first is not None and first.data == b"one"
    with pytest.raises(gofast.RemoteError) as info:
        s.recv(timeout=10)
    assert info.value.remote_type == "KeyError"
    s.close()


@pytest.mark.parametrize("off", ["client", "server"])
def test_one_side_without_it_times_out_as_before(pair_factory: Any, off: str) -> None:
    """One side turned it off, the other left at the default (on)."""
    kw = {f"{off}_settings": OFF}
    p: Pair = pair_factory(server_setup=setup, **kw)
    for msg_id in (FAIL_ID, UNKNOWN_ID, SILENT_ID):
        with pytest.raises(gofast.Timeout):
            p.client.request(BinMessage(msg_id, b"x"), timeout=0.3)
    s = p.client.stream(BinMessage(FAIL_ID, b""))
    assert list(s) == [] and s.error is None
    s.close()


def frames_until_ping(raw: wire.RawPeer) -> list[wire.Frame]:
    """Pings, then reads up to the echo: frames are answered in order, so
    these are all the frames the transport sent for what came before."""
    opaque = raw.next_opaque()
    raw.send_frame(wire.REQUEST, opaque, wire.PING_ID, wire.ping_payload("after"))
    frames = []
    while True:
        f = raw.read_frame(5)
        if (f.kind, f.opaque) == (wire.REQUEST, opaque) and f.id == wire.PING_ID:
            return frames
        frames.append(f)


def fail_everything(raw: wire.RawPeer) -> tuple[list[int], int]:
    requests = []
    for msg_id in (FAIL_ID, UNKNOWN_ID, SILENT_ID):
        opaque = raw.next_opaque()
        raw.send_frame(wire.REQUEST, opaque, msg_id, b"x")
        requests.append(opaque)
    start = raw.next_opaque()
    raw.send_frame(wire.STREAM_START, start, FAIL_ID, b"y")
    return requests, start


@pytest.mark.parametrize(
    ("ours", "tags"),
    [
        ({}, "x-errors"),
        ({"tags": "gzip,lzw"}, "gzip,lzw,x-errors"),
        (OFF, ""),
        ({"tags": "gzip", "errors.extension": False}, "gzip"),
    ],
    ids=["default", "encodings", "off", "encodings-off"],
)
def test_our_whoami_bytes_carry_the_tag(ours: dict[str, Any], tags: str) -> None:
    """The whoami REQUEST and RESPONSE our transport writes, byte for byte:
    by default its tags end in ``x-errors``, after any encodings."""
    buffersize = gofast.default_settings()["buffersize"]
    want = wire.whoami_payload("lib-client", 1, buffersize, tags)
    with (
        wire.raw_server(ours, handshake=False) as (raw, transport),
        ThreadPoolExecutor(1) as pool,
    ):
        done = pool.submit(transport.handshake, 10)
        req = raw.read_frame(10)
        assert (req.kind, req.id, req.data) == (wire.REQUEST, wire.WHOAMI_ID, want)
        raw.send_frame(wire.REQUEST, req.opaque, wire.WHOAMI_ID, raw.whoami())
        ask = raw.next_opaque()
        raw.send_frame(wire.REQUEST, ask, wire.WHOAMI_ID, raw.whoami())
        resp = raw.read_frame(10)
        assert (resp.kind, resp.opaque, resp.id, resp.data) == (
            wire.REQUEST,
            ask,
            wire.WHOAMI_ID,
            want,
        )
        assert done.result(10).name == raw.name


@pytest.mark.parametrize(
    ("ours", "tags"), [(OFF, ""), ({}, "x-errors"), (EXT, "x-errors")], ids=["off", "default", "on"]
)
def test_against_a_peer_without_the_tag_nothing_changes(ours: dict[str, Any], tags: str) -> None:
    """A raw peer (as the Go reference) without x-errors: a failed REQUEST
    gets no frame at all, a failed STREAM-START only its FINISH, as without
    the extension; only our whoami's tags name it (unless it is off)."""
    with wire.raw_server(ours, setup=setup, handshake=False) as (raw, transport):
        theirs = raw.handshake(transport)
        assert theirs.tags == tags
        _, start = fail_everything(raw)
        frames = frames_until_ping(raw)
        assert [(f.kind, f.opaque) for f in frames] == [(wire.FINISH, start)], frames


@pytest.mark.parametrize("ours", [{}, EXT], ids=["default", "on"])
def test_a_peer_with_the_tag_gets_error_replies(ours: dict[str, Any]) -> None:
    """The bytes of the extension, as a raw peer that advertises it sees them."""
    with wire.raw_server(ours, setup=setup, tags="x-errors") as (raw, transport):
        assert transport.peer.tags == ("x-errors",)
        requests, start = fail_everything(raw)
        frames = frames_until_ping(raw)
        got = [(f.kind, f.opaque, f.id, cbor2.loads(f.data)) for f in frames[:4]]
        assert got == [
            (wire.REQUEST, requests[0], ERROR_ID, ["ValueError", "bad input: x"]),
            (
                wire.REQUEST,
                requests[1],
                ERROR_ID,
                ["NoHandler", f"no handler for message id {UNKNOWN_ID}"],
            ),
            (
                wire.REQUEST,
                requests[2],
                ERROR_ID,
                ["NoResponse", f"the handler for message id {SILENT_ID} returned without a reply"],
            ),
            (wire.STREAM_MSG, start, ERROR_ID, ["ValueError", "bad input: y"]),
        ]
        assert [(f.kind, f.opaque) for f in frames[4:]] == [(wire.FINISH, start)]


def test_turned_off_it_sends_nothing_to_a_peer_with_the_tag() -> None:
    """``errors.extension: False`` on our side: a raw peer that advertises
    x-errors gets no error frame, as a peer without the tag."""
    with wire.raw_server(OFF, setup=setup, tags="x-errors") as (raw, transport):
        assert transport.peer.tags == ("x-errors",)
        _, start = fail_everything(raw)
        frames = frames_until_ping(raw)
        assert [(f.kind, f.opaque) for f in frames] == [(wire.FINISH, start)], frames


DEFER_ID = 404


def test_a_handler_may_keep_its_stream_and_answer_later_from_another_thread(
    pair_factory: Any,
) -> None:
    """Returning without a reply is no error while the handler keeps the
    stream: the requester gets the late answer, not NoResponse."""
    kept: list[Any] = []
    p = pair_factory(server_setup=lambda t: t.subscribe(DEFER_ID, lambda s, m: kept.append(s)))
    with ThreadPoolExecutor(1) as pool:
        reply = pool.submit(p.client.request, BinMessage(DEFER_ID, b"x"), None, 30)
        wait_until(lambda: len(kept) == 1, what="the handler kept the stream")
        # The server reads in order: once the ping is answered, it is done
        # with the request's handler (a NoResponse would have gone first).
        assert p.client.ping("after", timeout=10) == "after"
        kept.pop().respond(BinMessage(DEFER_ID, b"later"))
        assert reply.result(10).data == b"later"
    assert p.server._requests_unanswered() == 0


def test_a_kept_stream_let_go_unanswered_raises_remote_error_then(pair_factory: Any) -> None:
    kept: list[Any] = []
    p = pair_factory(server_setup=lambda t: t.subscribe(DEFER_ID, lambda s, m: kept.append(s)))
    with ThreadPoolExecutor(1) as pool:
        reply = pool.submit(p.client.request, BinMessage(DEFER_ID, b"x"), None, 30)
        wait_until(lambda: len(kept) == 1, what="the handler kept the stream")
        assert p.server._requests_unanswered() == 1
        kept.clear()  # the last reference goes: nobody can answer it now
        e = remote_error(lambda: reply.result(10))
    assert e.remote_type == "NoResponse"
    assert p.server._requests_unanswered() == 0
