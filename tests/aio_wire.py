"""tests/wire.py's raw peer for gofast.aio: a real ``gofast.aio.Transport``
on one end of a TCP connection and, on the same event loop, a non-blocking
raw socket speaking wire.py's bytes on the other. Every read and write of
the raw side is awaited (bounded by a timeout), so the loop keeps running
the transport's handlers and futures while the test waits for a frame.

``async with araw_server(...) as (raw, t)``: the transport dialed the raw
peer; ``araw_client(...)``: the raw peer dialed a ``gofast.aio`` listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import gofast
import gofast.aio
import wire
from wire import PING_ID, REQUEST, WHOAMI_ID, Frame, PeerClosed, Whoami


class ARawPeer:
    """Our end of a connection whose other end is a ``gofast.aio.Transport``
    (the same defaults and helpers as ``wire.RawPeer``, awaited)."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        name: str = "raw",
        version: int = 1,
        buffersize: int = 4096,
        tags: str = "",
        opaque_start: int = 5000,
    ) -> None:
        sock.setblocking(False)
        # Each send goes out at once: a test's small frames, one after
        # another, are not held back for the previous one's ACK (Nagle).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.name = name
        self.version = version
        self.buffersize = buffersize
        #: encodings the raw peer asks to receive (sent in its whoami)
        self.tags = tags
        self._next = opaque_start
        self._buf = bytearray()
        #: every byte received so far (what the other end wrote)
        self.received = 0
        self._loop = asyncio.get_running_loop()

    def next_opaque(self) -> int:
        while not wire.valid_opaque(self._next):
            self._next += 1
        o = self._next
        self._next += 1
        return o

    # -- sending --

    async def send(self, data: bytes) -> None:
        async with asyncio.timeout(10.0):
            await self._loop.sock_sendall(self.sock, data)

    async def send_frame(
        self, kind: int, opaque: int, msg_id: int | None = None, data: bytes = b"", **kw: Any
    ) -> bytes:
        frame = wire.encode_frame(kind, opaque, msg_id, data, **kw)
        await self.send(frame)
        return frame

    async def post(self, msg_id: int, data: bytes, **kw: Any) -> bytes:
        return await self.send_frame(wire.POST, self.next_opaque(), msg_id, data, **kw)

    def shutdown_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    # -- receiving --

    async def _fill(self) -> None:
        try:
            chunk = await self._loop.sock_recv(self.sock, 65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise PeerClosed(bytes(self._buf))
        self.received += len(chunk)
        self._buf += chunk

    def _parsed(self) -> Frame | None:
        got = wire.parse_frame(self._buf)
        if got is None:
            return None
        frame, used = got
        del self._buf[:used]
        return frame

    async def read_frame(self, timeout: float = 5.0) -> Frame:
        """The next frame; TimeoutError if none is complete in time,
        PeerClosed if the connection ends first."""
        try:
            async with asyncio.timeout(timeout):
                while (frame := self._parsed()) is None:
                    await self._fill()
                return frame
        except TimeoutError:
            raise TimeoutError(f"no frame in time ({len(self._buf)} bytes pending)") from None

    async def wait_closed(self, timeout: float = 5.0) -> list[Frame]:
        """Reads until the other end closes; the frames read on the way.
        TimeoutError if it stays open."""
        frames = []
        async with asyncio.timeout(timeout):
            while True:
                while (frame := self._parsed()) is not None:
                    frames.append(frame)
                try:
                    await self._fill()
                except PeerClosed:
                    return frames

    # -- built-ins --

    def whoami(self) -> bytes:
        return wire.whoami_payload(self.name, self.version, self.buffersize, self.tags)

    async def ping(self, echo: str, timeout: float = 5.0) -> bytes:
        """Pings the transport by hand and returns the echo."""
        opaque = self.next_opaque()
        await self.send_frame(REQUEST, opaque, PING_ID, wire.ping_payload(echo))
        reply = await self.read_frame(timeout)
        assert (reply.kind, reply.opaque, reply.id) == (REQUEST, opaque, PING_ID), reply
        return wire.decode_ping(reply.data)

    async def handshake(self, transport: gofast.aio.Transport, timeout: float = 10.0) -> Whoami:
        """Awaits ``transport.handshake()`` while playing our half by hand
        (as ``wire.RawPeer.handshake``); the transport's whoami as sent."""
        done = asyncio.ensure_future(transport.handshake(timeout))
        try:
            req = await self.read_frame(timeout)
            assert req.kind == REQUEST and req.id == WHOAMI_ID, f"want a whoami request, got {req}"
            theirs = wire.decode_whoami(req.data)
            await self.send_frame(REQUEST, req.opaque, WHOAMI_ID, self.whoami())
            ours = self.next_opaque()
            await self.send_frame(REQUEST, ours, WHOAMI_ID, self.whoami())
            resp = await self.read_frame(timeout)
            assert (resp.kind, resp.opaque, resp.id) == (REQUEST, ours, WHOAMI_ID), resp
            assert wire.decode_whoami(resp.data) == theirs
            async with asyncio.timeout(timeout):
                peer = await done
            assert peer.name == self.name, peer
        except BaseException:
            done.cancel()  # a cancelled handshake closes the transport
            await asyncio.gather(done, return_exceptions=True)
            raise
        return theirs


ASetup = Callable[[Any], object]


@contextlib.asynccontextmanager
async def araw_server(
    settings: dict[str, Any] | None = None,
    *,
    setup: ASetup | None = None,
    handshake: bool = True,
    name: str = "lib-client",
    version: int = 1,
    **peer: Any,
) -> AsyncIterator[tuple[ARawPeer, gofast.aio.Transport]]:
    """A gofast.aio transport that dialed a raw listening socket:
    ``async with araw_server(...) as (raw, transport)``. ``setup(transport)``
    runs before the handshake (subscribe there). Both closed on exit."""
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as lis:
        lis.setblocking(False)
        accepted = asyncio.ensure_future(loop.sock_accept(lis))
        try:
            t = await gofast.aio.connect(
                lis.getsockname()[:2], name=name, version=version, settings=settings
            )
        except BaseException:
            accepted.cancel()
            await asyncio.gather(accepted, return_exceptions=True)
            raise
        try:
            async with asyncio.timeout(10.0):
                conn, _ = await accepted
        except BaseException:
            await t.aclose()
            raise
    async with _session(t, conn, setup, handshake, peer) as pair:
        yield pair


@contextlib.asynccontextmanager
async def araw_client(
    settings: dict[str, Any] | None = None,
    *,
    setup: ASetup | None = None,
    handshake: bool = True,
    name: str = "lib-server",
    version: int = 1,
    **peer: Any,
) -> AsyncIterator[tuple[ARawPeer, gofast.aio.Transport]]:
    """A raw socket that dialed a gofast.aio listener; the transport is the
    accepting side. Same contract as ``araw_server``."""
    loop = asyncio.get_running_loop()
    async with gofast.aio.listen(("127.0.0.1", 0)) as lis:
        conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        conn.setblocking(False)
        try:
            async with asyncio.timeout(10.0):
                await loop.sock_connect(conn, lis.address)
            t = await lis.accept(name=name, version=version, settings=settings, timeout=10.0)
        except BaseException:
            conn.close()
            raise
    async with _session(t, conn, setup, handshake, peer) as pair:
        yield pair


@contextlib.asynccontextmanager
async def _session(
    t: gofast.aio.Transport,
    conn: socket.socket,
    setup: ASetup | None,
    handshake: bool,
    peer: dict[str, Any],
) -> AsyncIterator[tuple[ARawPeer, gofast.aio.Transport]]:
    try:
        raw = ARawPeer(conn, **peer)
        if setup:
            setup(t)
        if handshake:
            await raw.handshake(t)
        yield raw, t
    finally:
        try:
            await t.aclose()
        finally:
            conn.close()


class AInbox:
    """What handlers (on the loop) collected: ``await inbox.wait_for(n)``."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = asyncio.Event()

    def append(self, item: Any) -> None:
        self.items.append(item)
        self._changed.set()

    def snapshot(self) -> list[Any]:
        return list(self.items)

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Any]:
        try:
            async with asyncio.timeout(timeout):
                while len(self.items) < count:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"got {len(self.items)} items, wanted {count} within {timeout}s"
            ) from None
        return list(self.items)


async def until(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Polls ``pred`` on the loop (counters: state with no event to await)."""
    try:
        async with asyncio.timeout(timeout):
            while not pred():
                await asyncio.sleep(0.002)
    except TimeoutError:
        raise AssertionError(f"{what} not reached within {timeout}s") from None


def stop_loop_taking(t: gofast.aio.Transport) -> None:
    """Makes ``t``'s loop take nothing more from the connection, as a loop
    busy elsewhere would: it stops draining what a reader thread queued,
    and stops reading a socket it reads itself (a plain one)."""
    t.loop.remove_reader(t._fd)
    sock_fd = t._t._aio_socket_fd()
    if sock_fd >= 0:
        t._t._aio_pause_reading()  # else the dropped watch ends the transport
        t.loop.remove_reader(sock_fd)


def resume_loop_taking(t: gofast.aio.Transport) -> None:
    """Undoes :func:`stop_loop_taking`."""
    t.loop.add_reader(t._fd, t._t._aio_drain)
    sock_fd = t._t._aio_socket_fd()
    if sock_fd >= 0:
        t.loop.add_reader(sock_fd, t._t._aio_watcher())
