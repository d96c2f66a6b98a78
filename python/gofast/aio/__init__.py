"""gofast for asyncio: the same transport, awaitable, for async services.

The same Rust core as :mod:`gofast` (frames, settings, counters, limits and
error types are the same), with the calls an asyncio program awaits and
handlers that run on the transport's event loop, never on another thread:

>>> import gofast.aio                                        # doctest: +SKIP
>>> async def main():
...     async with await gofast.aio.connect(("127.0.0.1", 9998)) as t:
...         await t.handshake()
...         await t.post(Note("hi"))
...         reply = await t.request(Query(1), Reply, timeout=5)
...         async for item in t.messages(Range(0, 10)):
...             ...
>>> asyncio.run(main())

* :func:`connect` / :func:`listen` and ``await listener.accept()`` give a
  :class:`Transport`, bound to the loop it was made on (another loop gets
  :class:`~gofast.UsageError`); ``async with`` closes either.
* ``await t.post(msg)`` is ready at once while the send queue has room and
  waits, without blocking the loop, when the peer stops reading.
* ``await t.request(msg, ResponseType, timeout=)``: cancelling the task
  (``task.cancel()``, ``asyncio.timeout()``) gives the request up; its late
  RESPONSE is dropped and counted, as after a timeout.
* ``t.stream(msg)`` is a :class:`Stream`: ``await send()``,
  ``await close()``, ``async for`` over what the peer sends;
  ``t.messages(msg)`` iterates one; ``await t.ping()``; ``t.stats()``.
* Handlers, subscribed as on :class:`gofast.Transport`, are plain
  functions or ``async def``: an ``async def`` REQUEST handler may await
  before it answers (return the reply, or ``stream.respond(reply)``, which
  never blocks the loop); a STREAM-START handler gets a :class:`Stream` and
  may return a callback, be an ``async def`` (our side closes when it
  returns) or an async generator (its yields are the stream's messages).
* :class:`Server` serves many connections with handlers set once.

How it works: over a plain socket the loop reads it itself, one native call
per socket read that runs the whole batch (handlers, RESPONSEs resolving
their requests' futures) on the loop; over TLS or with ``idle.timeout`` a
reader thread reads and queues the batch for the loop, which an eventfd
wakes once per read. The writer thread writes what the loop cannot at once.
The loop never waits on the core: a full send queue is waited out on an
executor thread (docs/asyncio.md).
"""

from __future__ import annotations

from ..transport import Whoami
from ._server import Server
from ._stream import Stream
from ._transport import Handler, Listener, Transport, connect, listen

__all__ = [
    "Handler",
    "Listener",
    "Server",
    "Stream",
    "Transport",
    "Whoami",
    "connect",
    "listen",
]
