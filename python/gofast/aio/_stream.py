"""The asyncio stream: both ends of a bi-directional STREAM, read with
``async for`` and written with ``await send()``."""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Awaitable, Callable
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

    __slots__ = (
        "_loop",
        "_pid",
        "_native",
        "_inbox",
        "_waiter",
        "_ended",
        "_forward",
        "_opening",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Where recv() may wait: on another loop, or in a fork()ed child,
        # nothing would ever deliver. (Not the transport itself: it holds
        # this stream while it is open, a cycle the collector cannot see.)
        self._loop = loop
        self._pid = os.getpid()
        self._native: _native.Stream | None = None
        self._inbox: deque[BinMessage | None] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        # Where messages go instead of the inbox (a callback the handler gave).
        self._forward: Callable[[BinMessage | None], object] | None = None
        # Opens the stream when the send queue was full at stream().
        self._opening: Callable[[], Awaitable[None]] | None = None

    @classmethod
    def _remote(cls, native: _native.Stream, loop: asyncio.AbstractEventLoop) -> Stream:
        s = cls(loop)
        s._native = native
        return s

    # Called by the drain, on the loop, for each message and then None.
    def _deliver(self, msg: BinMessage | None) -> object:
        if self._forward is not None:
            return self._forward(msg)
        self._inbox.append(msg)
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)
        return None

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
        while not self._inbox:
            if self._ended:
                self._end()
                return None
            self._check_waitable()
            w: asyncio.Future[None] = self._loop.create_future()
            self._waiter = w
            if timeout is None:
                await w
            else:
                try:
                    async with asyncio.timeout(timeout):
                        await w
                except TimeoutError:
                    raise Timeout(f"no stream message within {timeout}s") from None
        msg = self._inbox.popleft()
        if msg is None:
            self._ended = True
            self._end()
            return None
        return msg

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

    def _end(self) -> None:
        err = self.error
        if err is not None:
            raise err

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> BinMessage:
        msg = await self.recv()
        if msg is None:
            raise StopAsyncIteration
        return msg

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
