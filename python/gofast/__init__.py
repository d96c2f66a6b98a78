"""gofast for Python: the gofast protocol over one TCP connection.

Either side can POST (no reply), REQUEST a single RESPONSE, or open any
number of bi-directional STREAMs, all multiplexed at once. The connection
loop, batching writer and frame codec run in Rust on native threads;
handlers are plain Python callables.

>>> import gofast                                          # doctest: +SKIP
>>> t = gofast.Transport.connect(("127.0.0.1", 9998), name="client")
>>> t.handshake()
>>> reply = t.request(MyQuery(...), MyReply)
"""

from __future__ import annotations

from importlib.metadata import version as _dist_version
from typing import Any

from . import _native
from ._native import BinMessage
from .errors import (
    ConnectionClosed,
    GofastError,
    OpaqueExhausted,
    ProtocolError,
    RemoteError,
    SettingsError,
    StreamClosed,
    Timeout,
    TLSError,
    UsageError,
)
from .message import RESERVED_IDS, CborMessage, Message, MessageType
from .server import Server
from .settings import default_settings
from .stats_http import StatsServer, serve_stats, transport_names
from .tls import TLS
from .transport import (
    Address,
    Handler,
    Listener,
    Stream,
    StreamCallback,
    Transport,
    Whoami,
    listen,
)
from .version import Version64

# One version, Cargo.toml's: maturin writes it into the distribution's metadata.
__version__: str = _dist_version("gofast-transport")

__all__ = [
    "Address",
    "BinMessage",
    "CborMessage",
    "ConnectionClosed",
    "GofastError",
    "Handler",
    "Listener",
    "Message",
    "MessageType",
    "OpaqueExhausted",
    "ProtocolError",
    "RESERVED_IDS",
    "STAT_NAMES",
    "Server",
    "SettingsError",
    "Stream",
    "StreamCallback",
    "StatsServer",
    "StreamClosed",
    "TLS",
    "TLSError",
    "Timeout",
    "Transport",
    "UsageError",
    "RemoteError",
    "Version64",
    "Whoami",
    "default_settings",
    "listen",
    "serve_stats",
    "stats",
    "transport_names",
]

STAT_NAMES: tuple[str, ...] = tuple(_native.STAT_NAMES)
"""Counter names, as in the Go reference (plus n_handler_errors, n_timeouts,
n_log_suppressed)."""


def stats(name: str | None = None) -> dict[str, Any]:
    """Counters summed over every live (not yet closed) transport, or over
    those named ``name``; a closed transport's own ``stats()`` still reads."""
    return _native.stats(name)
