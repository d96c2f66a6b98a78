"""A gofast.aio transport against a hand-driven peer: tests/wire.py's
blocking ``RawPeer`` on one end of a TCP connection (a test drives it
through ``asyncio.to_thread``, so the loop runs the transport meanwhile)
and a ``gofast.aio.Transport`` that dialed it on the other."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import gofast.aio
from wire import REQUEST, WHOAMI_ID, RawPeer


def _their_half(raw: RawPeer) -> None:
    """The raw side of the whoami handshake (as ``RawPeer.handshake``)."""
    req = raw.read_frame(10.0)
    assert req.kind == REQUEST and req.id == WHOAMI_ID, f"want a whoami request, got {req}"
    raw.send_frame(REQUEST, req.opaque, WHOAMI_ID, raw.whoami())
    ours = raw.next_opaque()
    raw.send_frame(REQUEST, ours, WHOAMI_ID, raw.whoami())
    resp = raw.read_frame(10.0)
    assert (resp.kind, resp.opaque, resp.id) == (REQUEST, ours, WHOAMI_ID), resp


@contextlib.asynccontextmanager
async def raw_peer(
    settings: dict[str, Any] | None = None, *, setup: Callable[[Any], object] | None = None
) -> AsyncIterator[tuple[RawPeer, gofast.aio.Transport]]:
    """``async with raw_peer() as (raw, t)``: ``t`` dialed ``raw`` and they
    have shaken hands (``setup(t)`` runs before); both closed at the end."""
    with socket.create_server(("127.0.0.1", 0)) as lis:
        lis.settimeout(10.0)
        accepting = asyncio.ensure_future(asyncio.to_thread(lis.accept))
        t = await gofast.aio.connect(lis.getsockname()[:2], name="lib-client", settings=settings)
        conn, _ = await accepting
    try:
        raw = RawPeer(conn)
        if setup:
            setup(t)
        shaking = asyncio.ensure_future(t.handshake(10.0))
        try:
            await asyncio.to_thread(_their_half, raw)
        except BaseException:
            shaking.cancel()  # a cancelled handshake closes the transport
            await asyncio.gather(shaking, return_exceptions=True)
            raise
        async with asyncio.timeout(10.0):
            assert (await shaking).name == raw.name
        yield raw, t
    finally:
        try:
            await t.aclose()
        finally:
            conn.close()
