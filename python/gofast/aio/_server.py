"""The asyncio server: one listener, many gofast.aio connections, handlers
set once, everything on one event loop (no threads of its own).

>>> server = gofast.aio.Server(("127.0.0.1", 9998), name="kv")  # doctest: +SKIP
>>> server.subscribe(Get, on_get)
>>> await server.serve_forever()      # or await server.start() ... await server.stop(5)

As :class:`gofast.Server`: handlers subscribed on the server are given to
every connection before its handshake; each handshake runs in a task of its
own (a silent client delays no one and is dropped after
``handshake_timeout``); ``max_connections`` refuses (and counts) more;
``on_connect``/``on_disconnect`` hooks (plain or ``async def``) run once per
connection; :meth:`stop` waits up to ``grace`` for the work in flight (a
REQUEST whose handler has not answered yet, a stream the peer opened or the
server started) and closes everything. A connection's end is known from the
transport itself (no sweeping).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from .._subscriptions import Subscriptions
from ..errors import ConnectionClosed, UsageError
from ..message import BinMessage
from ..server import SERVER_STAT_NAMES
from ..tls import TLS
from ..transport import DEFAULT_VERSION, HANDSHAKE_TIMEOUT, Address
from ..version import Version64
from ._transport import Handler, Listener, Transport

__all__ = ["Server", "Hook"]

log = logging.getLogger("gofast.server")

Hook = Callable[[Transport], object]
"""``on_connect(transport)`` / ``on_disconnect(transport)``; may be ``async def``."""


class _Conn:
    __slots__ = ("transport", "connected")

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.connected = False

    def in_flight(self) -> int:
        if self.transport.closed:
            return 0
        try:
            mine, theirs = self.transport._t._exchanges_in_use()
            unanswered = self.transport._t._requests_unanswered()
        except ConnectionClosed:
            return 0
        return unanswered + mine + theirs


class Server:
    """Accepts gofast.aio connections on ``address`` (``(host, port)``, a
    Unix socket path; ``tls`` for TLS) and serves them on the running loop.
    Use ``async with Server(...)`` or :meth:`start`/:meth:`stop`."""

    def __init__(
        self,
        address: Address = ("127.0.0.1", 0),
        *,
        name: str = "server",
        version: Version64 | int = DEFAULT_VERSION,
        settings: dict[str, Any] | None = None,
        max_connections: int = 1024,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        on_connect: Hook | None = None,
        on_disconnect: Hook | None = None,
        backlog: int = 128,
        tls: TLS | None = None,
    ) -> None:
        if max_connections < 1:
            raise UsageError(f"max_connections must be at least 1, not {max_connections}")
        self.name = name
        self._version = version
        self._settings = dict(settings or {})
        self._max = max_connections
        self._handshake_timeout = handshake_timeout
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._subscriptions: Subscriptions[Handler] = Subscriptions()
        self._pending: dict[Transport, _Conn] = {}
        self._live: dict[Transport, _Conn] = {}
        self._retired: dict[str, int] = {}
        self._counts = dict.fromkeys(SERVER_STAT_NAMES[:-1], 0)
        self._closing = False
        self._started = False
        self._stopping = False
        self._stopped: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._listener = Listener(address, backlog, tls=tls)

    # ---- handlers (before start) ---------------------------------------------

    def subscribe(self, message_type: type[Any] | int, handler: Handler) -> Self:
        """Routes ``message_type`` on every connection to ``handler``."""
        self._subscriptions.add(message_type, handler)
        return self

    def subscribe_batch(
        self, message_type: type[Any] | int, handler: Callable[[list[BinMessage]], object]
    ) -> Self:
        """Routes POSTs of ``message_type`` to a batch handler on every connection."""
        self._subscriptions.add_batch(message_type, handler)
        return self

    def default_handler(self, handler: Handler | None) -> Self:
        """Handles every message id without a subscribed handler."""
        self._subscriptions.set_default(handler)
        return self

    # ---- state ---------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int] | str:
        """The (host, port) it listens on, or its Unix socket path."""
        return self._listener.address

    @property
    def connections(self) -> list[Transport]:
        """The live, handshaken transports, oldest first."""
        return [t for t in self._live if not t.closed]

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._started and not self._stopping

    def stats(self) -> dict[str, int]:
        """Counters summed over every connection this server has had, plus
        the server's own (as :meth:`gofast.Server.stats`)."""
        total = dict(self._retired)
        for t in self._live:
            for k, v in t.stats().items():
                total[k] = total.get(k, 0) + v
        total.update(self._counts)
        total["n_live"] = sum(not t.closed for t in self._live)
        return total

    # ---- running ----------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self) -> Self:
        """Starts accepting on the running loop and returns."""
        if self._started:
            raise UsageError("the server was already started")
        self._started = True
        self._subscriptions.frozen = True
        self._stopped = asyncio.Event()
        self._spawn(self._accept_loop())
        return self

    async def serve_forever(self, grace: float = 5.0) -> None:
        """Serves until :meth:`stop`; cancelled (Ctrl-C under
        ``asyncio.run``), it stops with ``grace`` seconds for work in
        flight, then re-raises."""
        if not self._started:
            await self.start()
        assert self._stopped is not None
        try:
            await self._stopped.wait()
        except asyncio.CancelledError:
            await asyncio.shield(self.stop(grace))
            raise

    async def stop(self, grace: float = 5.0) -> None:
        """Stops accepting, waits up to ``grace`` seconds for the work in
        flight, then closes every connection. Idempotent."""
        if self._stopping:
            if self._stopped is not None:
                await self._stopped.wait()
            return
        self._stopping = True
        self._listener.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(grace, 0.0)
        while any(c.in_flight() for c in [*self._pending.values(), *self._live.values()]):
            if loop.time() >= deadline:
                break
            await asyncio.sleep(0.005)  # polling the counters; they have no event
        self._closing = True
        everything = [*self._pending, *self._live]
        await asyncio.gather(*(t.aclose() for t in everything), return_exceptions=True)
        # Every connection is closed: their tasks end (disconnect hooks run).
        me = asyncio.current_task()
        await asyncio.gather(*(t for t in self._tasks if t is not me), return_exceptions=True)
        if self._stopped is None:
            self._stopped = asyncio.Event()
        self._stopped.set()

    async def _accept_loop(self) -> None:
        while not self._stopping:
            try:
                t = await self._listener.accept(
                    name=self.name, version=self._version, settings=self._settings
                )
            except ConnectionClosed:
                return
            except OSError as e:
                if self._stopping:
                    return
                log.warning("server %s: accept failed: %s", self.name, e)
                await asyncio.sleep(0.1)  # e.g. EMFILE: do not spin
                continue
            if len(self._pending) + len(self._live) >= self._max:
                self._counts["n_refused"] += 1
                log.info("server %s: refused %s (limit %d)", self.name, t.peer_address, self._max)
                self._spawn(t.aclose())
                continue
            self._counts["n_accepted"] += 1
            conn = _Conn(t)
            self._pending[t] = conn
            self._spawn(self._serve(t, conn))

    async def _serve(self, t: Transport, conn: _Conn) -> None:
        try:
            self._subscriptions.apply(t)
            await t.handshake(self._handshake_timeout)
        except Exception as e:  # Timeout, ConnectionClosed, ProtocolError...
            del self._pending[t]
            self._counts["n_handshake_failed"] += 1
            await t.aclose()
            self._retire(t)
            log.info("server %s: handshake with %s failed: %s", self.name, t.peer_address, e)
            return
        except asyncio.CancelledError:
            self._pending.pop(t, None)
            t.close()
            self._retire(t)
            raise
        del self._pending[t]
        if self._closing:
            await t.aclose()
            self._retire(t)
            return
        self._live[t] = conn
        conn.connected = True
        await self._hook(self._on_connect, t)
        try:
            await t.wait_closed()
        finally:
            self._live.pop(t, None)
            self._retire(t)
            await asyncio.shield(self._hook(self._on_disconnect, t))

    def _retire(self, t: Transport) -> None:
        for k, v in t.stats().items():
            self._retired[k] = self._retired.get(k, 0) + v

    async def _hook(self, hook: Hook | None, t: Transport) -> None:
        if hook is None:
            return
        try:
            r = hook(t)
            if inspect.isawaitable(r):
                await r
        except Exception:
            self._counts["n_hook_errors"] += 1
            log.exception("server %s: hook %r failed for %r", self.name, hook, t)

    # ---- async context manager ------------------------------------------------

    async def __aenter__(self) -> Self:
        if not self._started:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop(grace=0)

    def __repr__(self) -> str:
        a = self.address
        where = a if isinstance(a, str) else f"{a[0]}:{a[1]}"
        state = "running" if self.running else "stopped" if self._stopping else "new"
        return f"<gofast.aio.Server {self.name!r} {state} {where} live={len(self._live)}>"
