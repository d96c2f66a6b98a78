"""Transport settings: a plain dict merged over :func:`default_settings`.

========================  =====================  ==========================================
key                       default                meaning
========================  =====================  ==========================================
``buffersize``            262144                 read-buffer capacity (pages are touched only
                                                 as data arrives); told to the peer in whoami
``batchsize``             1                      frames queued before a write is due
``tags``                  ``""``                 encodings to *receive*: "", "gzip", "lzw",
                                                 "gzip,lzw"; the peer compresses with them
``opaque.start``          10000 dial / 30000     first opaque of this side's range
                          accept
``opaque.end``            19999 dial / 39999     last opaque; the range size bounds the
                          accept                 exchanges in flight at once
``gzip.level``            1                      gzip level (0..9) for what we compress
``frame.max``             16 MiB                 largest frame accepted from the peer
``pending.max``           1 MiB                  queued bytes before senders block
``flush.period``          0.005                  seconds a batched frame may wait (None:
                                                 only batchsize or flush=True send it)
``request.timeout``       30.0                   default request timeout in seconds
                                                 (None: until the connection ends)
``streams.max``           10000                  most live streams the peer may have opened;
                                                 a STREAM-START past it is answered with
                                                 FINISH and counted as a drop
``idle.timeout``          None                   seconds without a received byte (heartbeats
                                                 count) before the connection is closed
                                                 (None: never)
``errors.extension``      True                   advertise ``x-errors`` (docs/protocol.md §9):
                                                 with a peer that advertises it too, failed
                                                 requests and streams raise ``RemoteError``
                                                 at once (False: they time out)
``reader``                ``"thread"``           who reads the socket: ``"thread"``, a reader
                                                 thread per transport; ``"shared"``, one epoll
                                                 thread for every such transport of the process
                                                 (handlers of all of them run on it, one after
                                                 another); TLS and ``idle.timeout`` keep a
                                                 thread; not for gofast.aio (SettingsError)
``chansize``              (ignored)              the Go reference's; accepted for porting
========================  =====================  ==========================================

The default opaque ranges of a dialing and an accepting side do not overlap
each other, nor the Go reference's default 1000..5000, so any two peers with
default settings can talk. Give a Go peer a range outside ours.

``errors.extension`` is on by default and changes nothing with the Go
reference, which does not advertise it (it logs our whoami's ``x-errors``
tag as unknown, once per connection, and ignores it). Under it a request
nobody can answer any more (its handler returned without a reply and kept
no reference to its stream) gets a ``NoResponse`` error reply; a handler
that keeps its stream may still answer later, from another thread.

``streams.max`` is the largest range a default peer of this package uses, so
no such peer is ever refused; a hostile peer is held to that many streams.
DEBUG lines about a peer's bad or dropped frames are limited to a burst of 20,
then 5 a second, per transport; the rest are counted in ``n_log_suppressed``
and the next line logged says how many were left out.
"""

from __future__ import annotations

from typing import Any

from . import _native

__all__ = ["default_settings"]


def default_settings(dialed: bool = True) -> dict[str, Any]:
    """A fresh dict of the defaults for a dialing (``dialed=True``) or an
    accepting side; change it and pass it to a constructor."""
    return _native.default_settings(dialed)
