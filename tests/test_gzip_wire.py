"""Our gzip bodies as the Go reference reads them (vectors/README.md quirk 2).

The reference decodes each tag-46 body with a single ``gzip.Reader.Read()``
and treats any error as fatal, ``io.EOF`` included. A complete member (a
final deflate block, then the CRC32/ISIZE trailer) makes that read return
the data together with ``io.EOF``, so the reference drops the connection. What
it reads cleanly is what it writes itself: the header, deflate data ending
in a sync flush (``00 00 ff ff``), no final block, no trailer.

A raw-socket peer that asks for gzip in its whoami receives what a real
transport sends (POSTs, REQUESTs, a ping, RESPONSEs, a pong) and checks each
tag-46 member: the reference's header bytes, and a zlib decompressor
(``wbits=31``) that returns the whole body *without reaching end of stream*,
which is what the reference's single read needs.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import gofast
import wire
from wire import MAJOR_BYTES, MAJOR_TAG, PING_ID, POST, REQUEST, TAG_GZIP, read_head

SIZES = [0, 1, 17, 512, 30_000]
POST_ID = 100  # what the transport posts
REQ_ID = 101  # what the transport requests from the raw peer
ECHO_ID = 102  # what the raw peer requests; the transport's handler echoes
TIMEOUT = 5.0

#: RFC 1952 XFL as the reference's writer sets it: 2 for BestCompression, 4
#: for BestSpeed, 0 for every other level.
XFL = {level: {1: 4, 9: 2}.get(level, 0) for level in range(10)}


def payload(size: int) -> bytes:
    """Deterministic data: text (deflate finds matches) then noise (it
    finds none), so both kinds of block are exercised."""
    text = (b"the quick brown fox jumps over the lazy dog " * (size // 44 + 1))[: size // 2]
    return text + random.Random(size).randbytes(size - len(text))


def gzip_member(frame: wire.Frame) -> bytes:
    """The byte string of the frame's tag-46 body: the gzip member itself."""
    body = frame.body
    tag = read_head(body, 0)
    assert tag is not None and tag[:2] == (MAJOR_TAG, TAG_GZIP), f"not a gzip body: {frame}"
    bstr = read_head(body, tag[2])
    assert bstr is not None and bstr[0] == MAJOR_BYTES, frame
    assert bstr[2] + bstr[1] == len(body), "tag 46 is not followed by exactly one byte string"
    return body[bstr[2] :]


def check_member(frame: wire.Frame, msg_id: int, data: bytes, level: int = 1) -> None:
    """The frame's body is one gzip member the way the reference writes them,
    and inflates to message ``msg_id``/``data`` without reaching its end."""
    member = gzip_member(frame)
    assert member[:10] == bytes([0x1F, 0x8B, 8, 0, 0, 0, 0, 0, XFL[level], 0xFF]), member[:10]
    d = zlib.decompressobj(wbits=31)
    inner = d.decompress(member)
    # A complete member would end the stream here: a final block and a
    # trailer, which make the reference's single Read return io.EOF.
    assert d.eof is False, "the member ends the deflate stream (final block and trailer)"
    assert member.endswith(b"\x00\x00\xff\xff"), f"no sync flush at the end: {member[-12:].hex()}"
    assert d.unused_data == b""
    got = wire.decode_body(inner)
    assert (got.id, got.data, got.layers) == (msg_id, data, ()), (got.id, len(got.data))


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(1, thread_name_prefix="gzip-wire") as p:
        yield p


def echo(stream: Any, msg: gofast.BinMessage) -> None:
    """The transport's REQUEST handler: answers with the same id and data."""
    stream.respond(gofast.BinMessage(msg.id, msg.data))


def gzip_peer(level: int | None = None) -> Any:
    """A transport dialed to a raw peer that asks for gzip, handshaken."""
    settings = {"request.timeout": TIMEOUT}
    if level is not None:
        settings["gzip.level"] = level
    return wire.raw_server(settings, setup=lambda t: t.subscribe(ECHO_ID, echo), tags="gzip")


@pytest.mark.parametrize("size", SIZES)
def test_post_request_and_response_bodies(size: int, pool: ThreadPoolExecutor) -> None:
    data = payload(size)
    with gzip_peer() as (raw, t):
        t.post(gofast.BinMessage(POST_ID, data), flush=True)
        check_member(raw.read_frame(TIMEOUT), POST_ID, data)

        # The transport's REQUEST; the raw peer answers it (uncompressed:
        # the transport did not ask for gzip).
        fut = pool.submit(t.request, gofast.BinMessage(REQ_ID, data), None, TIMEOUT)
        req = raw.read_frame(TIMEOUT)
        assert req.kind == REQUEST
        check_member(req, REQ_ID, data)
        raw.send_frame(REQUEST, req.opaque, REQ_ID, b"answer")
        assert fut.result(TIMEOUT).data == b"answer"

        # The raw peer's REQUEST; the transport's RESPONSE.
        opaque = raw.next_opaque()
        raw.send_frame(REQUEST, opaque, ECHO_ID, data)
        resp = raw.read_frame(TIMEOUT)
        assert (resp.kind, resp.opaque) == (REQUEST, opaque)
        check_member(resp, ECHO_ID, data)


@pytest.mark.parametrize("size", [0, 5, 17, 300])
def test_ping_and_pong_bodies(size: int, pool: ThreadPoolExecutor) -> None:
    echo_text = "p" * size
    with gzip_peer() as (raw, t):
        # Our ping: a REQUEST the raw peer answers by hand.
        fut = pool.submit(t.ping, echo_text, TIMEOUT)
        req = raw.read_frame(TIMEOUT)
        assert req.kind == REQUEST
        check_member(req, PING_ID, wire.ping_payload(echo_text))
        raw.send_frame(REQUEST, req.opaque, PING_ID, wire.ping_payload(echo_text))
        assert fut.result(TIMEOUT) == echo_text

        # The raw peer's ping: our pong is a RESPONSE.
        opaque = raw.next_opaque()
        raw.send_frame(REQUEST, opaque, PING_ID, wire.ping_payload(echo_text))
        pong = raw.read_frame(TIMEOUT)
        assert (pong.kind, pong.opaque) == (REQUEST, opaque)
        check_member(pong, PING_ID, wire.ping_payload(echo_text))


@pytest.mark.parametrize("level", [0, 1, 2, 6, 9])
def test_levels_set_xfl_and_keep_the_framing(level: int) -> None:
    with gzip_peer(level) as (raw, t):
        for size in SIZES:
            data = payload(size)
            t.post(gofast.BinMessage(POST_ID, data), flush=True)
            frame = raw.read_frame(TIMEOUT)
            assert frame.kind == POST
            check_member(frame, POST_ID, data, level)
