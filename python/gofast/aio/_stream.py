"""The asyncio stream: both ends of a bi-directional STREAM, read with
``async for`` and written with ``await send()``."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Self

from .. import _native
from ..errors import Timeout, UsageError
from ..message import BinMessage, Message
from . import _drive

__all__ = ["Stream"]


class Stream:
    """One STREAM: what :meth:`Transport.stream` returns, and what a
    STREAM-START handler gets. ``await send(msg)`` (waits, without blocking
    the loop, while the peer is not reading), ``await close()`` (ends this
    side; the stream is over when the peer has closed its side too), and
    ``async for msg in stream`` (or ``await recv()``) over what the peer
    sends until it closes its side. A stream cut by the connection's end
    raises :class:`~gofast.ConnectionClosed` there; one whose peer handler
    failed (``x-errors``), :class:`~gofast.RemoteError`.

    Use it as ``async with transport.stream(msg) as s:`` to close it at
    the end of the block."""

    __slots__ = ("_loop", "_pid", "_native", "_inbox", "_opening")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Where recv() may wait: on another loop, or in a fork()ed child,
        # nothing would ever deliver. (Not the transport itself: it holds
        # this stream while it is open, a cycle the collector cannot see.)
        self._loop = loop
        self._pid = os.getpid()
        self._native: _native.Stream | None = None
        # What the peer sends, put in by the drain without a Python call.
        self._inbox = _native.AioInbox(loop)
        # Opens the stream when the send queue was full at stream().
        self._opening: Callable[[], Awaitable[None]] | None = None

    @classmethod
    def _remote(cls, native: _native.Stream, loop: asyncio.AbstractEventLoop) -> Stream:
        s = cls(loop)
        s._bind(native)
        return s

    def _bind(self, native: _native.Stream) -> None:
        self._native = native
        self._inbox._bind(native)

    async def _opened(self) -> _native.Stream:
        if self._native is None and self._opening is not None:
            await self._opening()
        assert self._native is not None
        return self._native

    @property
    def opaque(self) -> int:
        """The opaque value the stream travels under (0 until opened)."""
        return self._native.opaque if self._native is not None else 0

    @property
    def error(self) -> BaseException | None:
        """Why the stream ended early (see :attr:`gofast.Stream.error`)."""
        return self._native.error if self._native is not None else None

    def send(self, msg: Message, *, flush: bool = False) -> Awaitable[None]:
        """Sends ``msg`` on the stream; await it. Ready at once while the
        send queue has room; else it waits for room without blocking the
        loop. ``flush=True`` makes it due now (else it goes with the next
        batch, or within the flush period)."""
        s = self._native
        if s is not None and s._try_send(msg, flush):
            return _native.READY
        return self._send_later(msg, flush)

    async def _send_later(self, msg: Message, flush: bool) -> None:
        s = await self._opened()
        await _drive.send_later(s, msg, flush)

    async def close(self) -> None:
        """Ends this side of the stream (FINISH, once; later calls do nothing)."""
        s = await self._opened()
        s.close()

    async def recv(self, timeout: float | None = None) -> BinMessage | None:
        """The next message from the peer, or None once it has closed its
        side. ``timeout`` (seconds) raises :class:`~gofast.Timeout` when
        nothing arrives in time."""
        if self._native is None:
            await self._opened()
        self._check_waitable()
        if timeout is None:
            return await self._inbox.recv()
        try:
            async with asyncio.timeout(timeout):
                return await self._inbox.recv()
        except TimeoutError:
            raise Timeout(f"no stream message within {timeout}s") from None

    def _check_waitable(self) -> None:
        if os.getpid() != self._pid:
            raise UsageError(
                "this stream's transport belongs to the parent process (this is a "
                "fork()ed child): make a new transport here"
            )
        if asyncio.get_running_loop() is not self._loop:
            raise UsageError(
                "this stream's gofast.aio transport is bound to another event loop (the "
                "one it was made on); make a transport on this loop instead"
            )

    def __aiter__(self) -> AsyncIterator[BinMessage]:
        if self._native is not None:
            return self._inbox  # native: no Python frame per message
        return self._opening_then_all()

    async def _opening_then_all(self) -> AsyncIterator[BinMessage]:
        await self._opened()
        async for m in self._inbox:
            yield m

    def __anext__(self) -> Awaitable[BinMessage]:
        if self._native is not None:
            return self._inbox.__anext__()
        return self._opened_next()

    async def _opened_next(self) -> BinMessage:
        await self._opened()
        return await self._inbox.__anext__()

    async def __aenter__(self) -> Self:
        await self._opened()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._native is not None:
            self._native.close()

    def __repr__(self) -> str:
        return f"<gofast.aio.Stream {self._native!r}>"
