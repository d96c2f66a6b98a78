"""The transport: one gofast connection, usable from many threads at once.

A :class:`Transport` is made by :meth:`Transport.connect`, by
:meth:`Listener.accept`, or from a connected socket with
:meth:`Transport.from_socket`. Subscribe handlers, call :meth:`handshake`,
then post, request and stream. Handlers run on the transport's reader thread
(holding the GIL only while Python code runs) and must return quickly: hand
long work to another thread.
"""

from __future__ import annotations

import atexit
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from . import _native
from .errors import ConnectionClosed, UsageError
from .message import BinMessage, Message, _check_id
from .version import Version64

__all__ = ["Transport", "Listener", "listen", "Whoami", "Handler", "StreamCallback", "Stream"]

Stream = _native.Stream

StreamCallback = Callable[[BinMessage | None], object]
"""Gets each message the peer sends on a stream, then ``None`` once at its end."""

Handler = Callable[
    ["_native.Stream | None", BinMessage],
    StreamCallback | Message | Iterator[Message] | None,
]
"""Called as ``handler(stream, msg)``: ``stream`` is None for a POST, the
stream to ``respond()`` through for a REQUEST, and the new stream for a
STREAM-START.

A REQUEST handler may return its reply (the same as ``respond(reply)``); one
that neither returns nor sends a reply is reported: to the requester as a
``RemoteError`` under the ``x-errors`` extension, else by one warning per
message id on the ``gofast`` logger (a handler that answers later, from
another thread, sees that warning once; under ``x-errors`` it must answer
before it returns, as its requester has its ``RemoteError`` by then).

A STREAM-START handler returns the stream's callback, or None, or is a
generator function: its yields are sent on the stream and its end closes
our side. The generator runs on a thread of its own (not the reader thread,
so it may block between yields); messages the opener sends on such a stream
are dropped, as for a handler that returns None."""

DEFAULT_VERSION = Version64(1)
HANDSHAKE_TIMEOUT = 10.0


@dataclass(frozen=True)
class Whoami:
    """What a side says about itself in the handshake."""

    name: str
    version: Version64
    buffersize: int
    tags: tuple[str, ...]

    @classmethod
    def _from_native(cls, raw: tuple[str, int, int, str]) -> Whoami:
        name, version, buffersize, tags = raw
        return cls(name, Version64(version), buffersize, tuple(t for t in tags.split(",") if t))


def _version_number(version: object) -> int:
    if isinstance(version, Version64):
        return version.value
    if isinstance(version, bool) or not isinstance(version, int):
        raise UsageError(f"version must be a Version64 or an int, not {version!r}")
    if not 0 <= version < 1 << 64:
        raise UsageError(f"version {version} is outside 0..2**64-1 (a Version64)")
    return version


_names = iter(range(1, 1 << 62))


def _default_name(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


class Transport(_native.Transport):
    """One gofast connection. Safe to share between threads.

    Use it as a context manager, or call :meth:`close`; closing flushes what
    is queued, fails pending requests with :class:`~gofast.ConnectionClosed`
    and ends open streams with a ``None`` callback.
    """

    @classmethod
    def connect(
        cls,
        address: tuple[str, int],
        *,
        name: str | None = None,
        version: Version64 | int = DEFAULT_VERSION,
        settings: dict[str, Any] | None = None,
        timeout: float | None = 10.0,
    ) -> Self:
        """Dials ``address`` (``(host, port)``) and wraps the connection."""
        sock = socket.create_connection(address, timeout=timeout)
        return cls.from_socket(sock, name=name, version=version, settings=settings, dialed=True)

    @classmethod
    def from_socket(
        cls,
        sock: socket.socket,
        *,
        name: str | None = None,
        version: Version64 | int = DEFAULT_VERSION,
        settings: dict[str, Any] | None = None,
        dialed: bool = True,
    ) -> Self:
        """Takes over a connected TCP socket (it is detached from ``sock``).
        ``dialed`` picks the default opaque range: True for the side that
        connected, False for the side that accepted."""
        if sock.type != socket.SOCK_STREAM:
            raise ValueError("gofast needs a TCP (SOCK_STREAM) socket")
        merged = _native.default_settings(dialed)
        merged.update(settings or {})
        name = name or _default_name("dial" if dialed else "accept")
        number = _version_number(version)
        fd = sock.detach()
        return cls(name, fd, number, merged, dialed)

    # ---- handlers ------------------------------------------------------------

    def subscribe(self, message_type: type[Any] | int, handler: Handler) -> Self:
        """Routes incoming messages of ``message_type`` (a class with an
        ``ID``, or an id) to ``handler``. Returns the transport, to chain."""
        msg_id = message_type if isinstance(message_type, int) else message_type.ID
        self._subscribe(_check_id(msg_id), handler)
        return self

    def subscribe_batch(
        self, message_type: type[Any] | int, handler: Callable[[list[BinMessage]], object]
    ) -> Self:
        """Routes POSTs of ``message_type`` to ``handler(messages)``, which
        gets every such POST of one socket read as one list, in order: one
        Python call for many messages, when per-call overhead dominates."""
        msg_id = message_type if isinstance(message_type, int) else message_type.ID
        self._subscribe_batch(_check_id(msg_id), handler)
        return self

    def default_handler(self, handler: Handler | None) -> Self:
        """Handles every message id without a subscribed handler."""
        self._set_default_handler(handler)
        return self

    # ---- handshake and peer ----------------------------------------------------

    def handshake(self, timeout: float = HANDSHAKE_TIMEOUT) -> Whoami:
        """Exchanges whoami with the peer and starts receiving. Subscribe
        handlers first: messages arrive from here on. Returns the peer's
        whoami; raises :class:`~gofast.Timeout` if it takes longer."""
        return Whoami._from_native(self._handshake(timeout))

    def whoami(self, timeout: float | None = None) -> Whoami:
        """Asks the peer for its whoami now."""
        return Whoami._from_native(self._whoami(timeout))

    @property
    def peer(self) -> Whoami | None:
        """The peer's whoami from the handshake (None before it)."""
        raw = self._peer()
        return None if raw is None else Whoami._from_native(raw)

    @property
    def peer_version(self) -> Version64 | None:
        """The peer's version from the handshake (None before it)."""
        peer = self.peer
        return None if peer is None else peer.version

    # ---- conveniences ------------------------------------------------------------

    def messages(self, msg: Message, *, flush: bool = True) -> Iterator[BinMessage]:
        """Opens a stream and yields what the peer sends until it closes its
        side; closes ours when the loop ends (also on break or error)."""
        stream = self.stream(msg, None, flush)
        try:
            yield from stream
        finally:
            stream.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<gofast.Transport {self.name!r} {state} {self.local_address}->{self.peer_address}>"


class Listener:
    """A listening TCP socket that accepts gofast transports.

    >>> with gofast.listen(("127.0.0.1", 0)) as lis:   # doctest: +SKIP
    ...     transport = lis.accept(name="server")
    """

    def __init__(self, address: tuple[str, int] = ("127.0.0.1", 0), backlog: int = 128) -> None:
        # An IPv6 literal ("::1") needs an AF_INET6 socket; a name resolves.
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._sock = socket.create_server(address, family=family, backlog=backlog)
        self._closed = False

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) it listens on (the real port when 0 was asked)."""
        host, port = self._sock.getsockname()[:2]
        return host, port

    def accept(
        self,
        *,
        name: str | None = None,
        version: Version64 | int = DEFAULT_VERSION,
        settings: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Transport:
        """Waits for the next connection (``timeout`` in seconds raises
        :class:`TimeoutError`) and wraps it as an accepting-side transport.
        Raises :class:`~gofast.ConnectionClosed` (an ``OSError``) once the
        listener is closed, also in a thread already waiting here."""
        if self._closed:
            raise ConnectionClosed("the listener is closed")
        try:
            self._sock.settimeout(timeout)
            conn, _ = self._sock.accept()
        except TimeoutError:
            raise
        except OSError as e:
            if self._closed:
                raise ConnectionClosed("the listener is closed") from e
            raise
        return Transport.from_socket(
            conn, name=name, version=version, settings=settings, dialed=False
        )

    def close(self) -> None:
        """Stops listening and wakes a thread blocked in :meth:`accept`;
        transports already accepted carry on. Idempotent."""
        self._closed = True
        # close() alone leaves a thread blocked in accept() asleep on Linux
        # (the kernel keeps the socket alive under it); shutdown() wakes it.
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # not connected-capable on some systems, or already closed
        self._sock.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def listen(address: tuple[str, int] = ("127.0.0.1", 0), backlog: int = 128) -> Listener:
    """Listens on ``address``; see :class:`Listener`."""
    return Listener(address, backlog)


@atexit.register
def _close_all_transports() -> None:
    # Reader threads must not touch a finalizing interpreter: end every
    # connection, including ones whose Transport was dropped unclosed, and
    # wait for their threads while Python is still whole.
    _native._close_all_transports()
