"""Our gzip bodies as the Go reference reads them, sent through gofast.aio:
the async twin of test_gzip_wire.py (see there for why a member must end
in a sync flush, without a final block or trailer). A raw peer on the loop
asks for gzip and checks every tag-46 body a ``gofast.aio.Transport``
sends: ``await post()``, an awaited REQUEST, the RESPONSE of an ``async
def`` handler, ``await ping()`` and our pong, and a stream's messages."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import wire
from aio_wire import araw_server
from gofast import BinMessage
from test_gzip_wire import ECHO_ID, POST_ID, REQ_ID, SIZES, TIMEOUT, check_member, payload
from wire import FINISH, PING_ID, POST, REQUEST, STREAM_MSG, STREAM_START


async def echo(stream: Any, msg: BinMessage) -> BinMessage:
    """The transport's REQUEST handler: awaits, then answers alike."""
    await asyncio.sleep(0)
    return BinMessage(msg.id, msg.data)


def gzip_peer() -> Any:
    """A gofast.aio transport dialed to a raw peer that asks for gzip."""
    return araw_server(
        {"request.timeout": TIMEOUT}, setup=lambda t: t.subscribe(ECHO_ID, echo), tags="gzip"
    )


@pytest.mark.parametrize("size", SIZES)
async def test_post_request_and_response_bodies(size: int) -> None:
    data = payload(size)
    async with gzip_peer() as (raw, t):
        await t.post(BinMessage(POST_ID, data), flush=True)
        check_member(await raw.read_frame(TIMEOUT), POST_ID, data)

        # Our awaited REQUEST; the raw peer answers it (uncompressed: the
        # transport did not ask for gzip).
        reply = asyncio.ensure_future(t.request(BinMessage(REQ_ID, data), None, TIMEOUT))
        req = await raw.read_frame(TIMEOUT)
        assert req.kind == REQUEST
        check_member(req, REQ_ID, data)
        await raw.send_frame(REQUEST, req.opaque, REQ_ID, b"answer")
        async with asyncio.timeout(TIMEOUT):
            assert (await reply).data == b"answer"

        # The raw peer's REQUEST; the async handler's RESPONSE.
        opaque = raw.next_opaque()
        await raw.send_frame(REQUEST, opaque, ECHO_ID, data)
        resp = await raw.read_frame(TIMEOUT)
        assert (resp.kind, resp.opaque) == (REQUEST, opaque)
        check_member(resp, ECHO_ID, data)


@pytest.mark.parametrize("size", [0, 5, 17, 300])
async def test_ping_and_pong_bodies(size: int) -> None:
    echo_text = "p" * size
    async with gzip_peer() as (raw, t):
        # Our awaited ping: a REQUEST the raw peer answers by hand.
        pong = asyncio.ensure_future(t.ping(echo_text, TIMEOUT))
        req = await raw.read_frame(TIMEOUT)
        assert req.kind == REQUEST
        check_member(req, PING_ID, wire.ping_payload(echo_text))
        await raw.send_frame(REQUEST, req.opaque, PING_ID, wire.ping_payload(echo_text))
        async with asyncio.timeout(TIMEOUT):
            assert await pong == echo_text

        # The raw peer's ping: our pong is a RESPONSE.
        opaque = raw.next_opaque()
        await raw.send_frame(REQUEST, opaque, PING_ID, wire.ping_payload(echo_text))
        got = await raw.read_frame(TIMEOUT)
        assert (got.kind, got.opaque) == (REQUEST, opaque)
        check_member(got, PING_ID, wire.ping_payload(echo_text))


async def test_stream_bodies() -> None:
    """STREAM-START and STREAM messages are gzip members too; FINISH
    carries no body."""
    async with gzip_peer() as (raw, t):
        stream = t.stream(BinMessage(POST_ID, payload(512)))
        start = await raw.read_frame(TIMEOUT)
        assert (start.kind, start.opaque) == (STREAM_START, stream.opaque)
        check_member(start, POST_ID, payload(512))
        for size in SIZES:
            await stream.send(BinMessage(POST_ID, payload(size)), flush=True)
            frame = await raw.read_frame(TIMEOUT)
            assert (frame.kind, frame.opaque) == (STREAM_MSG, stream.opaque)
            check_member(frame, POST_ID, payload(size))
        await stream.close()
        fin = await raw.read_frame(TIMEOUT)
        assert (fin.kind, fin.opaque, fin.body) == (FINISH, stream.opaque, b"")
        await raw.send(wire.encode_finish(stream.opaque))
        assert await stream.recv(TIMEOUT) is None
        # and what follows is still framed alike
        await t.post(BinMessage(POST_ID, b"after"), flush=True)
        frame = await raw.read_frame(TIMEOUT)
        assert frame.kind == POST
        check_member(frame, POST_ID, b"after")
        assert t.stats()["n_handler_errors"] == 0
        assert not t.closed
