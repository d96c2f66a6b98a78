"""The transport: one gofast connection, usable from many threads at once.

A :class:`Transport` is made by :meth:`Transport.connect`, by
:meth:`Listener.accept`, or from a connected socket with
:meth:`Transport.from_socket`. Subscribe handlers, call :meth:`handshake`,
then post, request and stream. Handlers run on the transport's reader thread
(holding the GIL only while Python code runs) and must return quickly: hand
long work to another thread (a REQUEST handler that responds from there
needs the setting ``errors.extension`` off on its side; see :data:`Handler`).
"""

from __future__ import annotations

import atexit
import os
import socket
import stat
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeAlias, cast

from . import _native
from .errors import ConnectionClosed, UsageError
from .message import BinMessage, Message, _check_id
from .tls import TLS
from .version import Version64

__all__ = [
    "Address",
    "Transport",
    "Listener",
    "listen",
    "Whoami",
    "Handler",
    "StreamCallback",
    "Stream",
]

Address: TypeAlias = "tuple[str, int] | str | os.PathLike[str]"
"""Where to connect or listen: ``(host, port)`` for TCP (an IPv6 literal as
host needs no brackets), or a ``str``/path-like, which is a Unix socket
path, as in Python's own socket conventions."""


def _unix_path(address: object) -> str | None:
    """The socket path if ``address`` is one (``str`` or path-like)."""
    if isinstance(address, (str, os.PathLike)):
        path = os.fspath(address)
        if not isinstance(path, str):
            raise TypeError("a Unix socket path must be text, not bytes")
        return path
    return None


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

A REQUEST handler may return its reply (the same as ``respond(reply)``), or
keep its ``stream`` and answer later, from another thread. A request nobody
can answer any more (the handler returned without a reply and kept no
reference to the stream, or the last reference went unanswered) is
reported: to the requester as a ``RemoteError`` (``NoResponse``) under the
``x-errors`` extension (setting ``errors.extension``, on by default, used
when the peer advertises it too), else by one warning per message id on the
``gofast`` logger.

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
        address: Address,
        *,
        name: str | None = None,
        version: Version64 | int = DEFAULT_VERSION,
        settings: dict[str, Any] | None = None,
        timeout: float | None = 10.0,
        tls: TLS | None = None,
    ) -> Self:
        """Dials ``address`` (``(host, port)``, or a Unix socket path) and
        wraps the connection. With ``tls``, the TLS handshake (verifying
        the server's certificate for ``tls.server_name``, by default the
        host dialed) runs in :meth:`handshake`."""
        path = _unix_path(address)
        if path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(path)
            except BaseException:
                sock.close()
                raise
            host = None
        else:
            host, port = cast("tuple[str, int]", address)
            sock = socket.create_connection((host, port), timeout=timeout)
        server_name = tls.server_name or host if tls is not None else None
        return cls.from_socket(
            sock,
            name=name,
            version=version,
            settings=settings,
            dialed=True,
            tls=tls,
            server_name=server_name,
        )

    @classmethod
    def from_socket(
        cls,
        sock: socket.socket,
        *,
        name: str | None = None,
        version: Version64 | int = DEFAULT_VERSION,
        settings: dict[str, Any] | None = None,
        dialed: bool = True,
        tls: TLS | None = None,
        server_name: str | None = None,
    ) -> Self:
        """Takes over a connected TCP or Unix stream socket (it is detached
        from ``sock``). ``dialed`` picks the default opaque range (True for
        the side that connected, False for the side that accepted) and,
        with ``tls``, the TLS role: the dialing side is the TLS client,
        verifying ``server_name`` (default ``tls.server_name``).

        An ``ssl.SSLSocket`` is refused: its TLS state cannot be carried
        over, and its raw socket would speak plaintext. Pass the plain
        socket and ``tls=`` instead."""
        return cls(*_native_args(sock, name, version, settings, dialed, tls, server_name))

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


_FAMILIES = (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX)


def _native_args(
    sock: socket.socket,
    name: str | None,
    version: Version64 | int,
    settings: dict[str, Any] | None,
    dialed: bool,
    tls: TLS | None,
    server_name: str | None,
) -> tuple[str, int, int, dict[str, Any], bool, Any, str | None]:
    """Checks what ``from_socket`` was given and takes the socket over:
    the native constructor's arguments (shared with ``gofast.aio``)."""
    ssl = sys.modules.get("ssl")  # not imported: sock cannot be an SSLSocket
    if ssl is not None and isinstance(sock, ssl.SSLSocket):
        raise UsageError(
            "from_socket() cannot take an ssl.SSLSocket: its TLS session stays in "
            "Python's ssl module and the raw socket would carry plaintext; pass the "
            "plain socket with tls=gofast.TLS(...) (gofast runs TLS itself)"
        )
    if sock.type != socket.SOCK_STREAM or sock.family not in _FAMILIES:
        raise ValueError("gofast needs a TCP or Unix stream (SOCK_STREAM) socket")
    if tls is not None and not isinstance(tls, TLS):
        raise TypeError(f"tls: a gofast.TLS, not {type(tls).__name__}")
    merged = _native.default_settings(dialed)
    merged.update(settings or {})
    name = name or _default_name("dial" if dialed else "accept")
    number = _version_number(version)
    if tls is not None and server_name is None:
        server_name = tls.server_name
    native_tls = tls._native if tls is not None else None
    if dialed and tls is not None and server_name is None:
        raise UsageError(
            "a TLS client verifies the server's name: give TLS(server_name=...) "
            "(a Unix socket path names no host)"
        )
    fd = sock.detach()
    return (name, fd, number, merged, dialed, native_tls, server_name)


def _bind_unix(path: str, backlog: int) -> socket.socket:
    # As asyncio's create_unix_server: a socket file left by a dead server
    # is removed (anything else at the path is left alone, and bind fails).
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


class Listener:
    """A listening socket (TCP, or Unix at a socket path) that accepts
    gofast transports; with ``tls``, each one is a TLS server side.

    >>> with gofast.listen(("127.0.0.1", 0)) as lis:   # doctest: +SKIP
    ...     transport = lis.accept(name="server")
    """

    def __init__(
        self,
        address: Address = ("127.0.0.1", 0),
        backlog: int = 128,
        *,
        tls: TLS | None = None,
    ) -> None:
        if tls is not None and not isinstance(tls, TLS):
            raise TypeError(f"tls: a gofast.TLS, not {type(tls).__name__}")
        if tls is not None and not tls._native.has_certificate:
            raise UsageError("a TLS server needs its certificate: TLS(cert=..., key=...)")
        self._tls = tls
        self._path = _unix_path(address)
        if self._path is not None:
            self._sock = _bind_unix(self._path, backlog)
        else:
            host, port = cast("tuple[str, int]", address)
            # An IPv6 literal ("::1") needs an AF_INET6 socket; a name resolves.
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self._sock = socket.create_server((host, port), family=family, backlog=backlog)
        # Kept: a closed socket cannot tell its address any more.
        self._address: tuple[str, int] | str = self._path or tuple(self._sock.getsockname()[:2])
        self._closed = False
        self._closed_path = False

    @property
    def address(self) -> tuple[str, int] | str:
        """The (host, port) it listens on (the real port when 0 was asked),
        or its socket path."""
        return self._address

    @property
    def tls(self) -> TLS | None:
        """The TLS its connections use, or None."""
        return self._tls

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
            conn, name=name, version=version, settings=settings, dialed=False, tls=self._tls
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
        if self._path is not None and not self._closed_path:
            self._closed_path = True
            try:
                os.unlink(self._path)  # ours: the socket file goes with it
            except OSError:
                pass
        self._sock.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

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


@atexit.register
def _close_all_transports() -> None:
    # Reader threads must not touch a finalizing interpreter: end every
    # connection, including ones whose Transport was dropped unclosed, and
    # wait for their threads while Python is still whole.
    _native._close_all_transports()
