"""What the native drain hands back to Python on the loop: tasks for
``async def`` handlers (kept alive, their exceptions reported), stream
handlers of every shape, and sends that must wait for room in the send
queue without blocking the loop."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any

from .. import _native

log = logging.getLogger("gofast")

# How long one wait for room in the send queue runs on an executor thread
# before its coroutine looks again (so a cancelled wait frees its thread).
ROOM_SLICE = 0.05

# A pump lets the loop run other work after this many messages: a send
# with room in the queue completes without suspending its task.
FAIR_EVERY = 64

# asyncio keeps only weak references to tasks: these are ours until done.
_tasks: set[asyncio.Task[Any]] = set()


def _keep(task: asyncio.Task[Any]) -> None:
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def _reported(transport: _native.Transport, what: str, task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        transport._report(what, exc)


def spawn(coro: Coroutine[Any, Any, Any], transport: _native.Transport, what: str) -> None:
    """Runs a handler's coroutine as a task; its exception is logged and
    counted (``n_handler_errors``), as a plain handler's is."""
    task = asyncio.get_running_loop().create_task(coro)
    _keep(task)
    task.add_done_callback(functools.partial(_reported, transport, what))


def _answered(
    transport: _native.Transport, stream: _native.Stream, msg_id: int, task: asyncio.Task[Any]
) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        transport._aio_finish_request(stream, msg_id, None, exc)
    else:
        transport._aio_finish_request(stream, msg_id, task.result())


def request(
    coro: Coroutine[Any, Any, Any],
    stream: _native.Stream,
    transport: _native.Transport,
    msg_id: int,
) -> None:
    """An ``async def`` REQUEST handler: its return value (or exception)
    is handled as a plain handler's, when it ends."""
    task = asyncio.get_running_loop().create_task(coro)
    _keep(task)
    task.add_done_callback(functools.partial(_answered, transport, stream, msg_id))


async def room(waiter: _native.Transport | _native.Stream) -> None:
    """Waits a slice for room in the send queue, on an executor thread."""
    await asyncio.get_running_loop().run_in_executor(None, waiter._wait_room, ROOM_SLICE)


async def post_later(transport: _native.Transport, msg: Any, flush: bool) -> None:
    transport._aio_check()
    while not transport._try_post(msg, flush):
        await room(transport)


async def send_later(stream: _native.Stream, msg: Any, flush: bool) -> None:
    while not stream._try_send(msg, flush):
        await room(stream)


async def _respond_later(stream: _native.Stream, msg: Any, flush: bool) -> None:
    while not stream._try_respond(msg, flush):
        await room(stream)


def respond_later(stream: _native.Stream, msg: Any, flush: bool) -> None:
    """A reply that found the send queue full: sent by a task once there
    is room (``respond()`` itself never blocks the loop)."""
    task = asyncio.get_running_loop().create_task(_respond_later(stream, msg, flush))
    _keep(task)


def stream_start(
    transport: _native.Transport, handler: Any, native: _native.Stream, msg: _native.BinMessage
) -> Any:
    """Runs a STREAM-START handler on the loop; returns where the stream's
    messages go (None: nowhere, they are dropped and counted)."""
    from ._stream import Stream

    stream = Stream._remote(native, asyncio.get_running_loop())
    returned = handler(stream, msg)
    if returned is None:
        return None
    if inspect.iscoroutine(returned):
        spawn(_converse(returned, stream), transport, f"stream handler for message id {msg.id}")
        return stream._inbox
    if inspect.isasyncgen(returned):
        spawn(_pump_async(returned, stream), transport, "stream generator")
        return None
    if inspect.isgenerator(returned):
        spawn(_pump(returned, stream), transport, "stream generator")
        return None
    if callable(returned):
        return returned
    raise TypeError(
        "a stream handler must return a callable, a generator, an async generator, "
        f"a coroutine or None, not {type(returned)}"
    )


async def _ending(stream: Any, exc: BaseException | None) -> None:
    try:
        if exc is None:
            await stream.close()
        else:
            stream._native._fail(type(exc).__name__, str(exc))
    except Exception:  # the connection is gone: nothing to tell
        log.debug("gofast: could not end %r", stream, exc_info=True)


async def _converse(coro: Coroutine[Any, Any, Any], stream: Any) -> None:
    """An ``async def`` stream handler: our side ends when it returns."""
    try:
        returned = await coro
    except Exception as e:
        await _ending(stream, e)
        raise
    if callable(returned):
        stream._inbox._forward(returned)
        return
    await _ending(stream, None)


async def _pump_async(gen: AsyncIterator[Any], stream: Any) -> None:
    # The native send, bound once: no Python frame or await per message
    # while the send queue has room.
    native: _native.Stream = stream._native
    try_send = native._try_send
    try:
        n = 0
        async for m in gen:
            if not try_send(m, False):
                await send_later(native, m, False)
            n += 1
            if n == FAIR_EVERY:
                n = 0
                await asyncio.sleep(0)
    except Exception as e:
        await _ending(stream, e)
        raise
    await _ending(stream, None)


async def _pump(gen: Iterator[Any], stream: Any) -> None:
    """A plain generator stream handler, iterated on the loop (each step
    must be quick: it runs between the loop's other work)."""
    native: _native.Stream = stream._native
    try_send = native._try_send
    try:
        n = 0
        for m in gen:
            if not try_send(m, False):
                await send_later(native, m, False)
            n += 1
            if n == FAIR_EVERY:
                n = 0
                await asyncio.sleep(0)
    except Exception as e:
        await _ending(stream, e)
        raise
    await _ending(stream, None)
