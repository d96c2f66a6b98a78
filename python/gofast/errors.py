"""The exceptions gofast raises. Every one is a :class:`GofastError`, and
each also derives from the built-in a caller would catch without knowing
gofast (``Timeout`` is a ``TimeoutError``, ``ConnectionClosed`` a
``ConnectionError``, ``SettingsError`` a ``ValueError``)."""

from __future__ import annotations

__all__ = [
    "GofastError",
    "ConnectionClosed",
    "ProtocolError",
    "Timeout",
    "OpaqueExhausted",
    "StreamClosed",
    "SettingsError",
    "UsageError",
    "RemoteError",
    "TLSError",
]


class GofastError(Exception):
    """Base of every gofast error."""


class ConnectionClosed(GofastError, ConnectionError):
    """The connection is closed, or closed while the call waited."""


class TLSError(ConnectionClosed):
    """The TLS handshake failed (an untrusted, expired or wrong-name
    certificate, a missing client certificate, a peer that does not speak
    TLS), or the peer's TLS records broke; the connection is closed. The
    message says which, and what to change."""


class ProtocolError(GofastError):
    """The peer sent bytes that break the gofast wire protocol, or a
    message other than the one expected: a response (or a ``BinMessage``
    decoded with ``decode(T)``) whose id is not ``T.ID``."""


class Timeout(GofastError, TimeoutError):
    """No response (or stream message) arrived in time."""


class OpaqueExhausted(GofastError):
    """Every opaque of the configured range is held by an exchange in flight."""


class StreamClosed(GofastError):
    """This side has already closed the stream."""


class SettingsError(GofastError, ValueError):
    """A setting is unknown or out of range."""


class UsageError(GofastError, ValueError):
    """The call cannot be made this way (e.g. a reserved message id)."""


class RemoteError(GofastError):
    """The peer's handler failed: it raised, there was none for the message
    id, or nothing can answer the request any more. Raised by ``request()``, and by a
    stream's ``recv()``/iteration (or found in ``stream.error``), only when
    both sides advertise the ``x-errors`` extension (setting
    ``errors.extension``, on by default; docs/protocol.md §9).

    ``remote_type`` is the name of the peer's exception type (or
    ``"NoHandler"``, ``"NoResponse"``), ``remote_message`` its message."""

    def __init__(self, remote_type: str, remote_message: str) -> None:
        super().__init__(f"{remote_type}: {remote_message}")
        self.remote_type = remote_type
        self.remote_message = remote_message
