"""A server: one listener, many gofast connections, handlers set once.

>>> server = gofast.Server(("127.0.0.1", 9998), name="kv")   # doctest: +SKIP
>>> server.subscribe(Get, on_get)
>>> server.serve_forever()          # or server.start() ... server.stop(grace=5)

Handlers subscribed on the :class:`Server` are given to every connection it
accepts, before that connection's handshake. Each handshake runs on its own
short-lived thread, so a client that connects and says nothing delays no one;
it is dropped after ``handshake_timeout``. The server holds every live
transport (:attr:`Server.connections`) and forgets it once it has closed.

How ends are found: the native transport has no close notification, so a
sweeper thread checks each live transport's ``closed`` flag every
``sweep_interval`` seconds (a cheap attribute read per connection), retires
the closed ones (their final counters go into :meth:`Server.stats`) and calls
``on_disconnect``.

What "in flight" means for :meth:`Server.stop`: on a connection, a REQUEST
from the peer whose handler has been called and that has not yet been
responded to (the server wraps its request handlers to count them, also when
the response is sent later from another thread, which needs
``settings={"errors.extension": False}``: see :data:`gofast.Handler`),
any stream the peer opened
that has not finished, and any exchange the server itself started there. So
a REQUEST's handler gets a stand-in for its stream with the same methods
(``respond``, ``close``, ``opaque``, ...), not a :class:`gofast.Stream`.
A request whose handler never responds holds ``stop()`` for all of ``grace``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from . import _native  # noqa: F401  (Handler names "_native.Stream": pdoc resolves it here)
from ._subscriptions import Subscriptions
from .errors import ConnectionClosed, UsageError
from .message import BinMessage
from .tls import TLS
from .transport import (
    DEFAULT_VERSION,
    HANDSHAKE_TIMEOUT,
    Address,
    Handler,
    Listener,
    Transport,
)
from .version import Version64

__all__ = ["Server", "Hook", "SERVER_STAT_NAMES"]

log = logging.getLogger("gofast.server")

Hook = Callable[[Transport], object]
"""``on_connect(transport)`` / ``on_disconnect(transport)``."""

SERVER_STAT_NAMES: tuple[str, ...] = (
    "n_accepted",
    "n_refused",
    "n_handshake_failed",
    "n_hook_errors",
    "n_live",
)
"""The server's own counters, added to the summed transport counters."""


class _Counter:
    """A thread-safe count of the requests being handled on one connection."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self, n: int) -> None:
        with self._lock:
            self.value += n


class _CountedRequest:
    """Stands in for a REQUEST's stream: counts it in flight until it is
    responded to (or closed), whatever thread does that."""

    __slots__ = ("_stream", "_counter", "_done", "_lock")

    def __init__(self, stream: Any, counter: _Counter) -> None:
        self._stream = stream
        self._counter = counter
        self._done = False
        self._lock = threading.Lock()
        counter.add(1)

    def _finish(self) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        self._counter.add(-1)

    def respond(self, msg: Any, flush: bool = True) -> None:
        try:
            self._stream.respond(msg, flush)
        finally:
            self._finish()

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self._finish()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _counting(handler: Handler, counter: _Counter) -> Handler:
    def wrapped(stream: Any, msg: BinMessage) -> Any:
        if stream is None or not stream.is_request:
            return handler(stream, msg)
        counted = _CountedRequest(stream, counter)
        try:
            reply = handler(counted, msg)  # type: ignore[arg-type]
        except BaseException:
            counted._finish()  # the handler failed: nothing will respond
            raise
        if reply is not None:
            counted._finish()  # a returned reply is the response, sent now
        return reply

    return wrapped


class _Conn:
    """What the server keeps about one accepted transport."""

    __slots__ = ("transport", "requests", "connected")

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.requests = _Counter()
        self.connected = False  # on_connect ran (so on_disconnect is due)

    def in_flight(self) -> int:
        if self.transport.closed:
            return 0
        try:
            mine, theirs = self.transport._exchanges_in_use()
        except ConnectionClosed:
            return 0
        return self.requests.value + mine + theirs


class Server:
    """Accepts gofast connections on ``address`` and serves them all with
    the handlers subscribed here.

    ``max_connections`` bounds the connections held at once (live ones and
    those still handshaking); one more is closed at once and counted in
    ``stats()["n_refused"]``. Hooks and handlers run on gofast's threads;
    an exception from a hook is logged and counted (``n_hook_errors``),
    never fatal. Use it as a context manager (starts, then stops with
    ``grace=0``), or call :meth:`start` / :meth:`serve_forever` and
    :meth:`stop`.
    """

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
        sweep_interval: float = 0.1,
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
        self._sweep_interval = sweep_interval
        self._subscriptions: Subscriptions[Handler] = Subscriptions()
        self._lock = threading.Lock()
        # accepted, not yet admitted (its handshake, or just after it: the
        # peer's first requests may already be handled)
        self._pending: dict[Transport, _Conn] = {}
        self._closing = False  # stop() is closing everything: admit no more
        self._live: dict[Transport, _Conn] = {}
        self._retired: dict[str, int] = {}  # counters of connections gone
        self._counts = dict.fromkeys(SERVER_STAT_NAMES[:-1], 0)
        self._started = False
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        # One per connection in its handshake: stop() joins them too, so
        # none is left in native code when the interpreter shuts down.
        self._handshaking: set[threading.Thread] = set()
        self._stopper: threading.Thread | None = None
        self._listener = Listener(address, backlog, tls=tls)

    # ---- handlers (before start) -------------------------------------------

    def subscribe(self, message_type: type[Any] | int, handler: Handler) -> Self:
        """Like :meth:`Transport.subscribe`, for every connection."""
        self._subscriptions.add(message_type, handler)
        return self

    def subscribe_batch(
        self, message_type: type[Any] | int, handler: Callable[[list[BinMessage]], object]
    ) -> Self:
        """Like :meth:`Transport.subscribe_batch`, for every connection."""
        self._subscriptions.add_batch(message_type, handler)
        return self

    def default_handler(self, handler: Handler | None) -> Self:
        """Like :meth:`Transport.default_handler`, for every connection."""
        self._subscriptions.set_default(handler)
        return self

    # ---- state ----------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int] | str:
        """The (host, port) it listens on (the real port when 0 was asked),
        or its Unix socket path."""
        return self._listener.address

    @property
    def connections(self) -> list[Transport]:
        """The live, handshaken transports, oldest first."""
        with self._lock:
            return [t for t in self._live if not t.closed]

    def stats(self) -> dict[str, int]:
        """Transport counters summed over every connection this server has
        had (closed ones included), plus ``n_accepted``, ``n_refused``
        (over ``max_connections``), ``n_handshake_failed``,
        ``n_hook_errors`` and ``n_live``."""
        with self._lock:
            total = dict(self._retired)
            live = list(self._live)
            counts = dict(self._counts)
        for t in live:
            for k, v in t.stats().items():
                total[k] = total.get(k, 0) + v
        total.update(counts)
        total["n_live"] = sum(not t.closed for t in live)
        return total

    # ---- running ------------------------------------------------------------------

    def start(self) -> Self:
        """Starts accepting on background threads and returns."""
        with self._lock:  # held until the threads run, so stop() sees them all
            if self._started:
                raise UsageError("the server was already started")
            self._started = True
            self._subscriptions.frozen = True
            for target, what in ((self._accept_loop, "accept"), (self._sweep_loop, "sweep")):
                th = threading.Thread(target=target, name=f"gofast-{self.name}-{what}", daemon=True)
                th.start()
                self._threads.append(th)
        return self

    def serve_forever(self, grace: float = 5.0) -> None:
        """Serves until :meth:`stop` (from another thread) or Ctrl-C, which
        stops with ``grace`` seconds for work in flight, then re-raises."""
        try:  # start() inside: a Ctrl-C from here on stops the server
            if not self._started:
                self.start()
            while not self._stopped.wait(0.5):
                pass
        except KeyboardInterrupt:
            self.stop(grace)
            raise

    def stop(self, grace: float = 5.0) -> None:
        """Stops accepting, waits up to ``grace`` seconds for the requests
        and streams in flight (see the module docstring) to finish, then
        closes every connection (also those still handshaking).
        Idempotent; returns once all is closed (a second, concurrent call
        waits for the first, unless made on the server's own threads)."""
        with self._lock:
            first = not self._stopping.is_set()
            threads = list(self._threads)
            if first:
                self._listener.close()  # first: once not running, no connect succeeds
                self._stopping.set()
                self._stopper = threading.current_thread()
        if not first:
            # (a hook the stop runs, or one on our threads, must not wait for it)
            me = threading.current_thread()
            if me is not self._stopper and me not in threads:
                self._stopped.wait()
            return
        # Connections still handshaking have nothing in flight: they do not
        # hold the wait, and are closed with the rest.
        deadline = time.monotonic() + max(grace, 0.0)
        while any(c.in_flight() for c in self._conns()):
            if time.monotonic() >= deadline:
                break
            time.sleep(0.005)  # polling the counters; they have no event
        with self._lock:
            self._closing = True
            everything = list(self._pending) + list(self._live)
        for t in everything:
            t.close()
        with self._lock:
            handshaking = list(self._handshaking)
        for th in threads + handshaking:
            if th is not threading.current_thread():
                th.join()
        self._sweep()
        self._stopped.set()

    def _conns(self) -> list[_Conn]:
        with self._lock:
            return list(self._pending.values()) + list(self._live.values())

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._started and not self._stopping.is_set()

    # ---- threads ----------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                t = self._listener.accept(
                    name=self.name, version=self._version, settings=self._settings
                )
            except ConnectionClosed:
                return  # stop() closed the listener
            except OSError as e:
                if self._stopping.is_set():
                    return
                log.warning("server %s: accept failed: %s", self.name, e)
                # e.g. EMFILE: do not spin while the condition lasts
                self._stopping.wait(0.1)
                continue
            if self._held() >= self._max:
                self._sweep()  # a closed connection not yet swept holds no slot
            with self._lock:
                refuse = len(self._pending) + len(self._live) >= self._max
                if refuse:
                    self._counts["n_refused"] += 1
                else:
                    self._counts["n_accepted"] += 1
                    self._pending[t] = _Conn(t)
            if refuse:
                log.info("server %s: refused %s (limit %d)", self.name, t.peer_address, self._max)
                t.close()
                continue
            hs = threading.Thread(
                target=self._handshake, args=(t,), name=f"gofast-{self.name}-hs", daemon=True
            )
            with self._lock:
                self._handshaking.add(hs)
            hs.start()

    def _held(self) -> int:
        with self._lock:
            return len(self._pending) + len(self._live)

    def _handshake(self, t: Transport) -> None:
        try:
            self._shake(t)
        finally:
            with self._lock:
                self._handshaking.discard(threading.current_thread())

    def _shake(self, t: Transport) -> None:
        with self._lock:
            conn = self._pending[t]
        try:
            self._subscriptions.apply(t, lambda h: _counting(h, conn.requests))
            t.handshake(self._handshake_timeout)
        except Exception as e:  # Timeout, ConnectionClosed, ProtocolError...
            t.close()
            with self._lock:
                del self._pending[t]
                self._counts["n_handshake_failed"] += 1
                self._retire(t)
            log.info("server %s: handshake with %s failed: %s", self.name, t.peer_address, e)
            return
        with self._lock:
            del self._pending[t]
            if self._closing:
                self._retire(t)
                admitted = False
            else:
                self._live[t] = conn
                admitted = True
        if not admitted:
            t.close()
            return
        conn.connected = True
        self._hook(self._on_connect, t)

    def _retire(self, t: Transport) -> None:
        # Called with self._lock held: keep a gone connection's counters.
        for k, v in t.stats().items():
            self._retired[k] = self._retired.get(k, 0) + v

    def _sweep_loop(self) -> None:
        while not self._stopping.wait(self._sweep_interval):
            self._sweep()

    def _sweep(self) -> None:
        with self._lock:
            gone = [c for t, c in self._live.items() if t.closed]
            for c in gone:
                del self._live[c.transport]
                self._retire(c.transport)
        for c in gone:
            if c.connected:
                self._hook(self._on_disconnect, c.transport)

    def _hook(self, hook: Hook | None, t: Transport) -> None:
        if hook is None:
            return
        try:
            hook(t)
        except Exception:
            with self._lock:
                self._counts["n_hook_errors"] += 1
            log.exception("server %s: hook %r failed for %r", self.name, hook, t)

    # ---- context manager ------------------------------------------------------

    def __enter__(self) -> Self:
        if not self._started:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(grace=0)

    def __repr__(self) -> str:
        a = self.address
        where = a if isinstance(a, str) else f"{a[0]}:{a[1]}"
        state = "running" if self.running else "stopped" if self._stopping.is_set() else "new"
        return f"<gofast.Server {self.name!r} {state} {where} live={len(self._live)}>"
