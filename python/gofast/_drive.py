"""Runs generator stream handlers: a stream handler that is a generator
function has its yields sent on the stream, and its end closes our side.
It runs on a thread of its own, as the reader thread (which calls handlers)
must not wait on a generator that computes or sleeps between its yields."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("gofast")


def _run(gen: Iterator[Any], stream: Any) -> None:
    try:
        for msg in gen:
            stream.send(msg)
    except Exception as e:
        log.error("gofast: stream generator for %r raised", stream, exc_info=True)
        try:
            stream._fail(type(e).__name__, str(e))
        except Exception:  # the connection is gone: nothing to tell
            log.debug("gofast: could not end %r", stream, exc_info=True)
    else:
        try:
            stream.close()
        except Exception:
            log.debug("gofast: could not close %r", stream, exc_info=True)


def start(gen: Iterator[Any], stream: Any) -> None:
    """Drives ``gen`` on a daemon thread (it must not keep the process up)."""
    name = f"gofast-stream-{stream.opaque}"
    threading.Thread(target=_run, args=(gen, stream), name=name, daemon=True).start()
