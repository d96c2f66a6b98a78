"""The asyncio transport, its listener, and ``connect``/``listen``."""

from __future__ import annotations

import asyncio
import functools
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, Self, TypeVar, cast, overload

from .. import _native
from ..errors import ConnectionClosed
from ..message import BinMessage, Message, MessageType, _check_id
from ..tls import TLS
from ..transport import (
    DEFAULT_VERSION,
    HANDSHAKE_TIMEOUT,
    Address,
    Whoami,
    _native_args,
    _unix_path,
)
from ..transport import (
    Listener as _SyncListener,
)
from ..version import Version64
from ._stream import Stream

__all__ = ["Transport", "Listener", "connect", "listen", "Handler"]

_R = TypeVar("_R")

Handler = Callable[[Any, BinMessage], Any]
"""Called as ``handler(stream, msg)`` on the transport's event loop, as a
plain function or an ``async def`` (see :mod:`gofast.aio`)."""


class Transport:
    """One gofast connection driven from an asyncio event loop: the same
    Rust core, frames, settings, counters and errors as
    :class:`gofast.Transport`, with awaitable calls. Made by
    :func:`connect` or :meth:`Listener.accept`; bound to the loop it was
    made on (using it from another loop raises
    :class:`~gofast.UsageError`). Handlers run on that loop.

    Use it as ``async with``, or call :meth:`aclose` (or :meth:`close`)."""

    def __init__(self, native: _native.Transport, loop: asyncio.AbstractEventLoop) -> None:
        """Internal: use :func:`connect` or :meth:`Listener.accept`."""
        self._t = native
        self._loop = loop
        self._fd = native._aio_fd()
        # Over a plain link the loop reads the socket itself, from the
        # handshake on (-1: a reader thread does, over TLS or with
        # idle.timeout).
        sock_fd = native._aio_socket_fd()
        self._ended: asyncio.Future[None] = loop.create_future()
        self._pid = os.getpid()
        # The hook holds what it needs, not this object: the native
        # transport keeps it, and a reference back would be a cycle through
        # it that the collector cannot see (never freed, its eventfd kept).
        hook = functools.partial(_closed, loop, self._fd, sock_fd, self._ended)
        native._aio_bind(loop, hook)
        loop.add_reader(self._fd, native._aio_drain)

    @classmethod
    def _from_socket(
        cls,
        sock: socket.socket,
        *,
        name: str | None,
        version: Version64 | int,
        settings: dict[str, Any] | None,
        dialed: bool,
        tls: TLS | None,
        server_name: str | None = None,
    ) -> Self:
        loop = asyncio.get_running_loop()
        sock.setblocking(True)  # the core's threads block on it
        args = _native_args(sock, name, version, settings, dialed, tls, server_name)
        return cls(_native.Transport(*args, aio=True), loop)

    # ---- handlers ------------------------------------------------------------

    def subscribe(self, message_type: type[Any] | int, handler: Handler) -> Self:
        """Routes incoming messages of ``message_type`` (a class with an
        ``ID``, or an id) to ``handler``, called on the loop. Returns the
        transport, to chain."""
        msg_id = message_type if isinstance(message_type, int) else message_type.ID
        self._t._subscribe(_check_id(msg_id), handler)
        return self

    def subscribe_batch(
        self, message_type: type[Any] | int, handler: Callable[[list[BinMessage]], object]
    ) -> Self:
        """Routes POSTs of ``message_type`` to ``handler(messages)``: every
        such POST of one socket read as one list, in order."""
        msg_id = message_type if isinstance(message_type, int) else message_type.ID
        self._t._subscribe_batch(_check_id(msg_id), handler)
        return self

    def default_handler(self, handler: Handler | None) -> Self:
        """Handles every message id without a subscribed handler."""
        self._t._set_default_handler(handler)
        return self

    # ---- handshake and peer ----------------------------------------------------

    async def handshake(self, timeout: float = HANDSHAKE_TIMEOUT) -> Whoami:
        """Exchanges whoami with the peer (after TLS, with ``tls=``) and
        starts receiving; subscribe handlers first. Raises
        :class:`~gofast.Timeout` past ``timeout`` seconds. Cancelling it
        closes the transport."""
        self._t._aio_check()
        sock_fd = self._t._aio_read_here()
        if sock_fd is not None:
            self._loop.add_reader(sock_fd, self._t._aio_watcher())
        try:
            raw = await self._loop.run_in_executor(None, self._t._handshake, timeout)
        except asyncio.CancelledError:
            self._t.close()  # wakes the thread waiting for the peer
            raise
        return Whoami._from_native(raw)

    async def whoami(self, timeout: float | None = None) -> Whoami:
        """Asks the peer for its whoami now."""
        fut: asyncio.Future[tuple[str, int, int, str]] = self._loop.create_future()
        opaque = self._t._aio_whoami(fut, timeout)
        while opaque is None:
            await self._room()
            opaque = self._t._aio_whoami(fut, timeout)
        return Whoami._from_native(await self._settled(fut, opaque))

    @property
    def peer(self) -> Whoami | None:
        """The peer's whoami from the handshake (None before it)."""
        raw = self._t._peer()
        return None if raw is None else Whoami._from_native(raw)

    @property
    def peer_version(self) -> Version64 | None:
        """The peer's version from the handshake (None before it)."""
        peer = self.peer
        return None if peer is None else peer.version

    # ---- sending ---------------------------------------------------------------

    def post(self, msg: Message, *, flush: bool = False) -> Awaitable[None]:
        """Posts ``msg`` (no reply); await it. Ready at once while the send
        queue has room; when the peer stops reading and the queue is full,
        it waits for room without blocking the loop. ``flush=True`` sends it
        now (else with the next batch, or within the flush period)."""
        return self._t._aio_post(msg, flush)

    @overload
    async def request(
        self, msg: Message, response_type: None = None, timeout: float | None = None
    ) -> BinMessage: ...
    @overload
    async def request(
        self, msg: Message, response_type: MessageType[_R], timeout: float | None = None
    ) -> _R: ...
    async def request(
        self,
        msg: Message,
        response_type: MessageType[Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Sends a REQUEST and returns its RESPONSE, decoded as
        ``response_type`` when given (as :meth:`gofast.Transport.request`).
        ``timeout`` in seconds (None: ``settings["request.timeout"]``;
        ``math.inf``: until the connection ends) raises
        :class:`~gofast.Timeout`. Cancelling the awaiting task (also by
        ``asyncio.timeout``) gives the request up: its late RESPONSE is
        dropped and counted."""
        fut: asyncio.Future[Any] = self._loop.create_future()
        opaque = self._t._aio_request(msg, fut, response_type, timeout)
        while opaque is None:  # the send queue is full
            await self._room()
            opaque = self._t._aio_request(msg, fut, response_type, timeout)
        try:
            return await fut
        except asyncio.CancelledError:
            self._t._aio_cancel(opaque)
            raise

    async def _settled(self, fut: asyncio.Future[_R], opaque: int) -> _R:
        try:
            return await fut
        except asyncio.CancelledError:
            self._t._aio_cancel(opaque)
            raise

    async def ping(self, echo: str = "", timeout: float | None = None) -> str:
        """Round trip of a ping: returns the echoed text."""
        fut: asyncio.Future[str] = self._loop.create_future()
        opaque = self._t._aio_ping(echo, fut, timeout)
        while opaque is None:
            await self._room()
            opaque = self._t._aio_ping(echo, fut, timeout)
        return await self._settled(fut, opaque)

    def stream(self, msg: Message, *, flush: bool = True) -> Stream:
        """Opens a STREAM with its first message: ``await send()``,
        ``await close()``, and ``async for`` over what the peer sends. When
        the send queue is full it opens on the stream's first await."""
        s = Stream(self._loop)
        native = self._t._aio_stream(msg, s._inbox, flush)
        if native is not None:
            s._bind(native)
            return s

        async def opening() -> None:
            while s._native is None:
                await self._room()
                native = self._t._aio_stream(msg, s._inbox, flush)
                if native is not None:
                    s._bind(native)
            s._opening = None

        s._opening = opening
        return s

    def messages(self, msg: Message, *, flush: bool = True) -> AsyncIterator[BinMessage]:
        """Opens a stream (at once) and yields what the peer sends until it
        closes its side; closes ours when the loop ends (also on break or
        error, as the iterator is let go)."""
        s = self.stream(msg, flush=flush)
        if s._native is not None:
            return _native.AioMessages(s._inbox, s._native)
        return self._messages_later(s)

    async def _messages_later(self, s: Stream) -> AsyncIterator[BinMessage]:
        try:
            async for m in s:
                yield m
        finally:
            if s._native is not None:
                s._native.close()

    async def _room(self) -> None:
        from ._drive import room

        self._t._aio_check()
        await room(self._t)

    def flush(self) -> None:
        """Makes whatever is queued due now."""
        self._t.flush()

    def flush_period(self, seconds: float | None) -> None:
        """Flushes batched frames at least this often (seconds; None: never)."""
        self._t.flush_period(seconds)

    def send_heartbeat(self, seconds: float | None) -> None:
        """Posts a heartbeat to the peer this often (seconds; None: stop)."""
        self._t.send_heartbeat(seconds)

    def silent_since(self) -> float | None:
        """Seconds since the peer's last heartbeat; None before the first."""
        return self._t.silent_since()

    # ---- state -------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The name given at connect/accept (it names stats and log lines)."""
        return self._t.name

    @property
    def closed(self) -> bool:
        """Whether the transport is closed, by either side or by an error."""
        return self._t.closed

    @property
    def settings(self) -> dict[str, Any]:
        """The effective settings."""
        return self._t.settings

    @property
    def local_address(self) -> tuple[str, int] | str | None:
        """This side's (host, port) or socket path."""
        return self._t.local_address

    @property
    def peer_address(self) -> tuple[str, int] | str | None:
        """The peer's (host, port) or socket path."""
        return self._t.peer_address

    @property
    def tls(self) -> bool:
        """Whether the connection runs over TLS."""
        return self._t.tls

    @property
    def peer_certificate(self) -> bytes | None:
        """The peer's verified certificate (DER), or None."""
        return self._t.peer_certificate

    @property
    def peer_subject(self) -> str | None:
        """The subject of the peer's certificate, or None."""
        return self._t.peer_subject

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the transport is bound to."""
        return self._loop

    def stats(self) -> dict[str, int]:
        """This transport's counters (docs/protocol.md §5 names)."""
        return self._t.stats()

    # ---- closing -------------------------------------------------------------

    def close(self) -> None:
        """Flushes what is queued (up to two seconds, blocking the loop
        meanwhile: prefer :meth:`aclose`), closes the connection; pending
        requests fail with :class:`~gofast.ConnectionClosed` and open
        streams end, on the loop. Idempotent."""
        self._t.close()

    async def aclose(self) -> None:
        """Closes as :meth:`close` does without blocking the loop, and
        returns once pending requests and streams have been ended. In a
        fork()ed child it does nothing, as :meth:`close`: the connection is
        the parent's."""
        if os.getpid() != self._pid:
            return
        self._t._aio_check()
        await self._loop.run_in_executor(None, self._t.close)
        await self.wait_closed()

    async def wait_closed(self) -> None:
        """Returns once the connection has ended (by either side) and its
        end has reached the loop (pending requests failed, streams ended)."""
        self._t._aio_check()
        await asyncio.shield(self._ended)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return (
            f"<gofast.aio.Transport {self.name!r} {state} "
            f"{self.local_address}->{self.peer_address}>"
        )


def _closed(
    loop: asyncio.AbstractEventLoop, fd: int, sock_fd: int, ended: asyncio.Future[None]
) -> None:
    # On the loop, once the connection's end has been drained (once: then
    # the eventfd and the socket are closed and their numbers may be reused).
    if not ended.done():
        loop.remove_reader(fd)
        if sock_fd >= 0:
            loop.remove_reader(sock_fd)
        ended.set_result(None)


async def connect(
    address: Address,
    *,
    name: str | None = None,
    version: Version64 | int = DEFAULT_VERSION,
    settings: dict[str, Any] | None = None,
    timeout: float | None = 10.0,
    tls: TLS | None = None,
) -> Transport:
    """Dials ``address`` (``(host, port)``, or a Unix socket path) without
    blocking the loop and wraps the connection, bound to the running loop;
    then ``await transport.handshake()``. With ``tls``, the TLS handshake
    (verifying ``tls.server_name``, by default the host dialed) runs in
    :meth:`Transport.handshake`."""
    loop = asyncio.get_running_loop()
    if tls is not None and not isinstance(tls, TLS):
        raise TypeError(f"tls: a gofast.TLS, not {type(tls).__name__}")
    path = _unix_path(address)
    async with asyncio.timeout(timeout):
        if path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, path)
            except BaseException:
                sock.close()
                raise
            host = None
        else:
            host, port = cast("tuple[str, int]", address)
            sock = await _dial(loop, host, port)
    server_name = tls.server_name or host if tls is not None else None
    return Transport._from_socket(
        sock,
        name=name,
        version=version,
        settings=settings,
        dialed=True,
        tls=tls,
        server_name=server_name,
    )


async def _dial(loop: asyncio.AbstractEventLoop, host: str, port: int) -> socket.socket:
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    error: OSError | None = None
    for family, kind, proto, _, addr in infos:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, addr)
            return sock
        except OSError as e:
            sock.close()
            error = e
        except BaseException:
            sock.close()
            raise
    raise error or OSError(f"cannot resolve {host!r}")


class Listener:
    """A listening socket (TCP, or Unix at a socket path; with ``tls``,
    TLS) whose :meth:`accept` waits without blocking the loop.

    >>> async with gofast.aio.listen(("127.0.0.1", 0)) as lis:  # doctest: +SKIP
    ...     transport = await lis.accept(name="server")
    """

    def __init__(
        self,
        address: Address = ("127.0.0.1", 0),
        backlog: int = 128,
        *,
        tls: TLS | None = None,
    ) -> None:
        self._take(_SyncListener(address, backlog, tls=tls))

    def _take(self, sync: _SyncListener) -> None:
        self._sync = sync
        self._sync._sock.setblocking(False)
        self._accepting: set[asyncio.Future[Any]] = set()

    @classmethod
    def _of(cls, sync: _SyncListener) -> Listener:
        """Accepts asyncio transports on a sync listener's socket (tests)."""
        lis = cls.__new__(cls)
        lis._take(sync)
        return lis

    @property
    def address(self) -> tuple[str, int] | str:
        """The (host, port) it listens on, or its socket path."""
        return self._sync.address

    @property
    def tls(self) -> TLS | None:
        """The TLS its connections use, or None."""
        return self._sync.tls

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._sync.closed

    async def accept(
        self,
        *,
        name: str | None = None,
        version: Version64 | int = DEFAULT_VERSION,
        settings: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Transport:
        """Waits for the next connection (``timeout`` in seconds raises
        :class:`TimeoutError`) and wraps it as an accepting-side transport
        bound to the running loop. Raises :class:`~gofast.ConnectionClosed`
        once the listener is closed, also in a task already waiting here."""
        if self.closed:
            raise ConnectionClosed("the listener is closed")
        loop = asyncio.get_running_loop()
        fut = asyncio.ensure_future(loop.sock_accept(self._sync._sock))
        self._accepting.add(fut)
        try:
            async with asyncio.timeout(timeout):
                conn, _ = await fut
        except asyncio.CancelledError:
            if self.closed and fut.cancelled():
                raise ConnectionClosed("the listener is closed") from None
            raise
        except OSError as e:
            if self.closed:
                raise ConnectionClosed("the listener is closed") from e
            raise
        finally:
            self._accepting.discard(fut)
        return Transport._from_socket(
            conn, name=name, version=version, settings=settings, dialed=False, tls=self.tls
        )

    def close(self) -> None:
        """Stops listening; tasks waiting in :meth:`accept` get
        :class:`~gofast.ConnectionClosed`. Transports already accepted carry
        on. Idempotent."""
        if self.closed:
            return
        waiting = list(self._accepting)
        for fut in waiting:
            fut.cancel()
        if waiting:
            # The loop lets go of the socket as the accepts end: close after.
            self._sync._closed = True
            waiting[0].get_loop().call_soon(self._sync.close)
        else:
            self._sync.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def listen(
    address: Address = ("127.0.0.1", 0), backlog: int = 128, *, tls: TLS | None = None
) -> Listener:
    """Listens on ``address`` (``(host, port)`` or a Unix socket path),
    with ``tls`` for TLS; see :class:`Listener`."""
    return Listener(address, backlog, tls=tls)
