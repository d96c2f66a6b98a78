"""A test-side implementation of the gofast wire format, independent of gofast.

Everything in the first part (CBOR heads, frames, bodies, gzip, LZW, the
built-in payloads, a frame reader) is written from docs/protocol.md and
vectors/README.md alone and uses nothing from the ``gofast`` package, so a
test can check the library against it rather than against itself.

The second part, ``RawPeer`` with ``raw_server()`` / ``raw_client()``, puts
a real ``gofast.Transport`` on one end of a TCP connection and a raw socket
speaking this module's bytes on the other, so a test can act as a peer byte
by byte: do the whoami handshake by hand, send crafted (or broken) frames,
and read what the transport sends back.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import struct
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from conftest import Collector

# ---------------------------------------------------------------------------
# Constants (docs/protocol.md §1, §4)

MARKER = b"\xd9\xd9\xf7"  # CBOR tag 55799

POST = 0xC6
REQUEST = 0x81  # a REQUEST, or the RESPONSE to one: same byte both ways
RESPONSE = REQUEST
STREAM_START = 0x9F
STREAM_MSG = 0xC7
FINISH = 0xC8

KINDS = {
    "post": POST,
    "request": REQUEST,
    "response": REQUEST,
    "stream_start": STREAM_START,
    "stream_msg": STREAM_MSG,
    "finish": FINISH,
}
KIND_NAMES = {
    POST: "POST",
    REQUEST: "REQUEST/RESPONSE",
    STREAM_START: "STREAM-START",
    STREAM_MSG: "STREAM",
    FINISH: "FINISH",
}

TAG_MSG, TAG_ID, TAG_DATA, TAG_GZIP, TAG_LZW = 43, 44, 45, 46, 47
COMPRESSION_TAGS = {"gzip": TAG_GZIP, "lzw": TAG_LZW}

PING_ID = 0x1001
WHOAMI_ID = 0x1002
HEARTBEAT_ID = 0x1003

MAJOR_UINT, MAJOR_BYTES, MAJOR_TAG = 0, 2, 6
BREAK = 0xFF
EMPTY_BSTR = 0x40

OPAQUE_MIN, OPAQUE_MAX = 266, 15_309_735
RESERVED_OPAQUES = frozenset({1001, 1002, 1003, 22098, 55799})

#: gzip member header as the reference writes it (BestSpeed, OS unknown).
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\xff"


class WireError(Exception):
    """Bytes that do not follow the wire format (on the test side)."""


def valid_opaque(opaque: int) -> bool:
    return OPAQUE_MIN <= opaque <= OPAQUE_MAX and opaque not in RESERVED_OPAQUES


# ---------------------------------------------------------------------------
# CBOR heads: the shortest form on write, any definite form on read


def head(major: int, value: int) -> bytes:
    """The shortest CBOR head of ``major`` carrying ``value``."""
    if not 0 <= value < 1 << 64:
        raise ValueError(f"CBOR argument out of range: {value}")
    top = major << 5
    if value < 24:
        return bytes([top | value])
    if value < 1 << 8:
        return bytes([top | 24, value])
    if value < 1 << 16:
        return bytes([top | 25]) + struct.pack(">H", value)
    if value < 1 << 32:
        return bytes([top | 26]) + struct.pack(">I", value)
    return bytes([top | 27]) + struct.pack(">Q", value)


def uint(value: int) -> bytes:
    return head(MAJOR_UINT, value)


def tag(number: int) -> bytes:
    return head(MAJOR_TAG, number)


def bstr(content: bytes) -> bytes:
    return head(MAJOR_BYTES, len(content)) + content


def read_head(buf: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int, int] | None:
    """``(major, value, position after the head)``, or None if ``buf`` ends
    inside the head. Indefinite/reserved additional info is a WireError."""
    if pos >= len(buf):
        return None
    first = buf[pos]
    major, info = first >> 5, first & 0x1F
    if info < 24:
        return major, info, pos + 1
    if info > 27:
        raise WireError(f"not a definite CBOR head: 0x{first:02x}")
    n = 1 << (info - 24)
    if pos + 1 + n > len(buf):
        return None
    return major, int.from_bytes(bytes(buf[pos + 1 : pos + 1 + n]), "big"), pos + 1 + n


def _need_head(buf: bytes, pos: int, what: str) -> tuple[int, int, int]:
    h = read_head(buf, pos)
    if h is None:
        raise WireError(f"truncated {what}")
    return h


# ---------------------------------------------------------------------------
# Bodies


def encode_body(msg_id: int, data: bytes) -> bytes:
    """``d8 2b bf d8 2c uint(id) d8 2d bstr(data) ff`` (uncompressed)."""
    return (
        tag(TAG_MSG) + b"\xbf" + tag(TAG_ID) + uint(msg_id) + tag(TAG_DATA) + bstr(data) + b"\xff"
    )


def wrap(body: bytes, tags: str | Sequence[str] = ()) -> bytes:
    """Wraps ``body`` once per compression in ``tags`` (first is innermost)."""
    if isinstance(tags, str):
        tags = [t for t in tags.split(",") if t]
    for name in tags:
        if name == "gzip":
            body = tag(TAG_GZIP) + bstr(gzip_compress(body))
        elif name == "lzw":
            body = tag(TAG_LZW) + bstr(lzw_compress(body))
        else:
            raise ValueError(f"unknown compression {name!r}")
    return body


class Message(NamedTuple):
    id: int
    data: bytes
    #: compression tags peeled on the way to tag 43, outermost first
    layers: tuple[int, ...] = ()


def decode_body(body: bytes, max_size: int | None = None) -> Message:
    """Peels compression tags (46 gzip, 47 lzw) down to tag 43 and parses
    the message map (indefinite, as the reference writes it, or definite)."""
    layers: list[int] = []
    while True:
        major, number, pos = _need_head(body, 0, "body tag")
        if major != MAJOR_TAG:
            raise WireError("body does not start with a tag")
        if number == TAG_MSG:
            msg_id, data = _parse_map(body, pos)
            return Message(msg_id, data, tuple(layers))
        if number not in (TAG_GZIP, TAG_LZW):
            raise WireError(f"unknown body tag {number}")
        if len(layers) >= 4:
            raise WireError("too many compression layers")
        major, n, start = _need_head(body, pos, "compressed body")
        if major != MAJOR_BYTES or start + n != len(body):
            raise WireError("compression tag not followed by exactly one byte string")
        packed = body[start:]
        body = (
            gzip_decompress(packed, max_size)
            if number == TAG_GZIP
            else lzw_decompress(packed, max_size)
        )
        layers.append(number)


def _parse_map(buf: bytes, pos: int) -> tuple[int, bytes]:
    if pos >= len(buf):
        raise WireError("truncated message map")
    items: int | None
    if buf[pos] == 0xBF:
        items, pos = None, pos + 1
    elif 0xA0 <= buf[pos] <= 0xB7:
        items, pos = (buf[pos] - 0xA0) * 2, pos + 1
    else:
        raise WireError("message is not a map")
    msg_id: int | None = None
    data: bytes | None = None
    seen = 0
    while True:
        if items is None and pos < len(buf) and buf[pos] == BREAK:
            pos += 1
            break
        if items is not None and seen == items:
            break
        major, number, pos = _need_head(buf, pos, "map entry")
        if major != MAJOR_TAG or number not in (TAG_ID, TAG_DATA):
            raise WireError(f"unexpected item in the message map (major {major}, {number})")
        if number == TAG_ID:
            major, msg_id, pos = _need_head(buf, pos, "message id")
            if major != MAJOR_UINT:
                raise WireError("id is not an unsigned integer")
        else:
            major, n, pos = _need_head(buf, pos, "message data")
            if major != MAJOR_BYTES or pos + n > len(buf):
                raise WireError("bad message data")
            data, pos = bytes(buf[pos : pos + n]), pos + n
        seen += 1
    if pos != len(buf):
        raise WireError("trailing bytes after the message")
    if msg_id is None or data is None:
        raise WireError("message map without id or data")
    if msg_id == 0:
        raise WireError("message id 0")
    return msg_id, data


# ---------------------------------------------------------------------------
# Frames


def packet(opaque: int, body: bytes) -> bytes:
    """``bstr( tag(opaque) bstr(body) )``"""
    return bstr(tag(opaque) + bstr(body))


def encode_frame(
    kind: int,
    opaque: int,
    msg_id: int | None = None,
    data: bytes = b"",
    *,
    body: bytes | None = None,
    tags: str | Sequence[str] = (),
) -> bytes:
    """One frame. ``body`` (raw bytes of the inner byte string) overrides
    ``msg_id``/``data``/``tags``, to craft broken bodies."""
    if kind == FINISH:
        return encode_finish(opaque)
    if body is None:
        if msg_id is None:
            raise ValueError("a message frame needs msg_id (or body=)")
        body = wrap(encode_body(msg_id, data), tags)
    return MARKER + bytes([kind]) + packet(opaque, body)


def encode_finish(opaque: int) -> bytes:
    """``d9 d9 f7 c8 bstr( tag(opaque) 40 ) ff``"""
    return MARKER + bytes([FINISH]) + bstr(tag(opaque) + b"\x40") + b"\xff"


@dataclass(frozen=True)
class Frame:
    kind: int
    opaque: int
    #: content of the inner byte string (b"" for FINISH)
    body: bytes
    #: the whole frame as it was on the wire
    raw: bytes

    @property
    def message(self) -> Message:
        if self.kind == FINISH:
            raise WireError("FINISH carries no message")
        return decode_body(self.body)

    @property
    def id(self) -> int:
        return self.message.id

    @property
    def data(self) -> bytes:
        return self.message.data

    def __repr__(self) -> str:
        name = KIND_NAMES.get(self.kind, hex(self.kind))
        if self.kind == FINISH:
            return f"Frame({name}, opaque={self.opaque})"
        try:
            m = self.message
            what = f"id={m.id:#x}, data={m.data[:40]!r}, layers={m.layers}"
        except WireError as e:
            what = f"undecodable body: {e}"
        return f"Frame({name}, opaque={self.opaque}, {what})"


def parse_frame(buf: bytes | bytearray, pos: int = 0) -> tuple[Frame, int] | None:
    """The frame at ``buf[pos:]`` and the position after it, or None when
    more bytes are needed. Broken framing raises WireError."""
    have = len(buf) - pos
    if have <= 0:
        return None
    n = min(have, 3)
    if bytes(buf[pos : pos + n]) != MARKER[:n]:
        raise WireError(f"bad marker {bytes(buf[pos : pos + n]).hex()}")
    if have < 5:
        return None
    kind = buf[pos + 3]
    h = read_head(buf, pos + 4)
    if h is None:
        return None
    major, length, start = h
    if major != MAJOR_BYTES:
        raise WireError(f"packet is not a byte string (major {major})")
    end = start + length + (1 if kind == FINISH else 0)
    if len(buf) < end:
        return None
    pkt = bytes(buf[start : start + length])
    major, opaque, at = _need_head(pkt, 0, "opaque")
    if major != MAJOR_TAG:
        raise WireError("packet does not start with a tag")
    if kind == FINISH:
        if pkt[at:] != b"\x40" or buf[end - 1] != BREAK:
            raise WireError("malformed FINISH")
        body = b""
    else:
        major, n, bstart = _need_head(pkt, at, "body")
        if major != MAJOR_BYTES or bstart + n != len(pkt):
            raise WireError("packet body is not exactly one byte string")
        body = pkt[bstart:]
    return Frame(kind, opaque, body, bytes(buf[pos:end])), end


def split_frames(data: bytes) -> list[Frame]:
    """Every frame of a byte string that holds whole frames only."""
    frames, pos = [], 0
    while pos < len(data):
        got = parse_frame(data, pos)
        if got is None:
            raise WireError(f"incomplete frame at offset {pos}")
        frame, pos = got
        frames.append(frame)
    return frames


def retag(frame: Frame, opaque: int) -> bytes:
    """``frame``'s bytes with another opaque; the body bytes (compressed or
    not) are kept as they are."""
    if frame.kind == FINISH:
        return encode_finish(opaque)
    return MARKER + bytes([frame.kind]) + packet(opaque, frame.body)


# ---------------------------------------------------------------------------
# gzip (zlib) and LZW


def gzip_compress(data: bytes, *, trailer: bool = True, level: int = 1) -> bytes:
    """A gzip member. ``trailer=False`` writes what the reference writes: the
    deflate stream sync-flushed, no final block, no CRC32/ISIZE."""
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    if not trailer:
        return GZIP_HEADER + c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    crc = struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)
    return GZIP_HEADER + c.compress(data) + c.flush(zlib.Z_FINISH) + crc


def gzip_decompress(data: bytes, max_size: int | None = None) -> bytes:
    """One gzip member, with or without its trailer (wbits=31 accepts a
    member that just stops, which is what the reference writes)."""
    d = zlib.decompressobj(31)
    try:
        out = d.decompress(data, max_size + 1 if max_size else 0)
    except zlib.error as e:
        raise WireError(f"corrupt gzip: {e}") from None
    if max_size is not None and len(out) > max_size:
        raise WireError("gzip output too large")
    if d.unused_data:
        raise WireError("bytes after the gzip member")
    return out


_LZW_CLEAR, _LZW_EOF, _LZW_MAX_WIDTH = 256, 257, 12


class _BitWriter:
    """LSB-first bit packing, as GIF and Go's compress/lzw (LSB) do it."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.bits = 0
        self.n = 0

    def write(self, code: int, width: int) -> None:
        self.bits |= code << self.n
        self.n += width
        while self.n >= 8:
            self.out.append(self.bits & 0xFF)
            self.bits >>= 8
            self.n -= 8

    def finish(self) -> bytes:
        if self.n:
            self.out.append(self.bits & 0xFF)
        return bytes(self.out)


def lzw_compress(data: bytes) -> bytes:
    """Go's compress/lzw writer, LSB order, 8-bit literals: a clear code
    first, codes 9..12 bits wide (no early change), a clear code when the
    table is full, the EOF code last."""
    w = _BitWriter()
    width, hi, overflow = 9, _LZW_EOF, 1 << 9
    w.write(_LZW_CLEAR, width)
    if not data:
        w.write(_LZW_EOF, width)
        return w.finish()
    table: dict[tuple[int, int], int] = {}

    def inc_hi() -> bool:
        """Go's incHi: False when the table was reset."""
        nonlocal width, hi, overflow
        hi += 1
        if hi == overflow:
            width += 1
            overflow <<= 1
        if hi == (1 << _LZW_MAX_WIDTH) - 1:
            w.write(_LZW_CLEAR, width)
            width, hi, overflow = 9, _LZW_EOF, 1 << 9
            table.clear()
            return False
        return True

    code = data[0]
    for x in data[1:]:
        key = (code, x)
        if key in table:
            code = table[key]
            continue
        w.write(code, width)
        code = x
        if inc_hi():
            table[key] = hi
    w.write(code, width)
    inc_hi()
    w.write(_LZW_EOF, width)
    return w.finish()


def lzw_decompress(data: bytes, max_size: int | None = None) -> bytes:
    """Go's compress/lzw reader, LSB order, 8-bit literals. Stops at the EOF
    code; input that ends without one ends the stream too."""
    prefix = [0] * 4096
    suffix = [0] * 4096
    out = bytearray()
    width, hi, overflow = 9, _LZW_EOF, 1 << 9
    last = -1
    bits = nbits = pos = 0
    while True:
        while nbits < width:
            if pos >= len(data):
                return bytes(out)
            bits |= data[pos] << nbits
            pos += 1
            nbits += 8
        code = bits & ((1 << width) - 1)
        bits >>= width
        nbits -= width
        if code < _LZW_CLEAR:
            out.append(code)
            if last != -1:
                suffix[hi], prefix[hi] = code, last
        elif code == _LZW_CLEAR:
            width, hi, overflow, last = 9, _LZW_EOF, 1 << 9, -1
            continue
        elif code == _LZW_EOF:
            return bytes(out)
        elif code <= hi:
            chain = bytearray()
            c = code
            if code == hi:
                if last == -1:
                    raise WireError("lzw: invalid code")
                first = last
                while first >= _LZW_CLEAR:
                    first = prefix[first]
                chain.append(first)  # KwKwK: ends with the head of `last`
                c = last
            while c >= _LZW_CLEAR:
                chain.append(suffix[c])
                c = prefix[c]
            chain.append(c)
            chain.reverse()
            out += chain
            if last != -1:
                suffix[hi], prefix[hi] = c, last
        else:
            raise WireError(f"lzw: invalid code {code} (hi {hi})")
        if max_size is not None and len(out) > max_size:
            raise WireError("lzw output too large")
        last, hi = code, hi + 1
        if hi >= overflow:
            if width == _LZW_MAX_WIDTH:
                last, hi = -1, hi - 1
            else:
                width += 1
                overflow = 1 << width


def lzw_codes(codes: Sequence[tuple[int, int]]) -> bytes:
    """Packs ``(code, width)`` pairs LSB-first: for crafting broken LZW."""
    w = _BitWriter()
    for code, width in codes:
        w.write(code, width)
    return w.finish()


# ---------------------------------------------------------------------------
# Built-in payloads (docs/protocol.md §4)


class Whoami(NamedTuple):
    name: str
    version: int
    buffersize: int
    tags: str


def whoami_payload(name: str, version: int, buffersize: int, tags: str) -> bytes:
    n = name.encode()
    t = tags.encode()
    return (
        bytes([len(n)])
        + n
        + uint(version)
        + struct.pack(">Q", buffersize)
        + struct.pack(">H", len(t))
        + t
    )


def decode_whoami(data: bytes) -> Whoami:
    try:
        n = data[0]
        name = data[1 : 1 + n].decode()
        major, version, pos = _need_head(data, 1 + n, "whoami version")
        if major != MAJOR_UINT:
            raise WireError("whoami version is not an unsigned integer")
        (buffersize,) = struct.unpack_from(">Q", data, pos)
        (tlen,) = struct.unpack_from(">H", data, pos + 8)
        tags = data[pos + 10 : pos + 10 + tlen]
        if len(tags) != tlen or pos + 10 + tlen != len(data):
            raise WireError("whoami payload length mismatch")
        return Whoami(name, version, buffersize, tags.decode())
    except (IndexError, struct.error, UnicodeDecodeError) as e:
        raise WireError(f"bad whoami payload: {e}") from None


def ping_payload(echo: str | bytes) -> bytes:
    b = echo.encode() if isinstance(echo, str) else echo
    return struct.pack(">H", len(b)) + b


def decode_ping(data: bytes) -> bytes:
    (n,) = struct.unpack_from(">H", data)
    if len(data) != 2 + n:
        raise WireError("ping payload length mismatch")
    return data[2:]


def heartbeat_payload(count: int) -> bytes:
    return struct.pack(">Q", count)


def decode_heartbeat(data: bytes) -> int:
    if len(data) != 8:
        raise WireError("heartbeat payload is not 8 bytes")
    return struct.unpack(">Q", data)[0]


# ---------------------------------------------------------------------------
# Reading frames off a socket


class PeerClosed(Exception):
    """The other end closed the connection (``partial`` bytes were pending)."""

    def __init__(self, partial: bytes = b"") -> None:
        super().__init__(f"connection closed by the other end ({len(partial)} bytes pending)")
        self.partial = partial


class FrameReader:
    """Reads whole frames off a blocking socket, every wait bounded."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        #: every byte received so far (what the other end wrote)
        self.received = 0

    def _fill(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no frame in time")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            raise TimeoutError(f"no frame in time ({len(self.buf)} bytes pending)") from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise PeerClosed(bytes(self.buf))
        self.received += len(chunk)
        self.buf += chunk

    def read_frame(self, timeout: float = 5.0) -> Frame:
        """The next frame; TimeoutError if none is complete in time,
        PeerClosed if the connection ends first."""
        deadline = time.monotonic() + timeout
        while True:
            got = parse_frame(self.buf)
            if got is not None:
                frame, used = got
                del self.buf[:used]
                return frame
            self._fill(deadline)

    def wait_closed(self, timeout: float = 5.0) -> list[Frame]:
        """Reads until the other end closes; returns the frames read on the
        way. TimeoutError if it stays open."""
        deadline = time.monotonic() + timeout
        frames = []
        while True:
            got = parse_frame(self.buf)
            if got is not None:
                frame, used = got
                del self.buf[:used]
                frames.append(frame)
                continue
            try:
                self._fill(deadline)
            except PeerClosed:
                return frames


# ---------------------------------------------------------------------------
# Golden vectors


def vectors_dir() -> Path:
    """tests/vectors, beside this file (or $GOFAST_VECTORS_DIR). Fails the
    test, never skips it, when the directory is missing."""
    env = os.environ.get("GOFAST_VECTORS_DIR")
    path = Path(env) if env else Path(__file__).resolve().parent / "vectors"
    if not path.is_dir():
        import pytest

        pytest.fail(
            f"golden vectors directory {path} is missing: set GOFAST_VECTORS_DIR to the "
            "directory holding frames.json and conversation-*.json",
            pytrace=False,
        )
    return path


def load_json(name: str) -> Any:
    path = vectors_dir() / name
    if not path.is_file():
        import pytest

        pytest.fail(f"golden vector file {path} is missing", pytrace=False)
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------
# RawPeer: a hand-driven peer against a real gofast.Transport


@dataclass
class RawPeer:
    """Our end of a connection whose other end is a ``gofast.Transport``."""

    sock: socket.socket
    name: str = "raw"
    version: int = 1
    buffersize: int = 4096
    #: encodings the raw peer asks to receive (sent in its whoami)
    tags: str = ""
    opaque_start: int = 5000
    _next: int = field(default=0, init=False)
    reader: FrameReader = field(init=False)

    def __post_init__(self) -> None:
        self.reader = FrameReader(self.sock)
        self._next = self.opaque_start

    def next_opaque(self) -> int:
        while not valid_opaque(self._next):
            self._next += 1
        o = self._next
        self._next += 1
        return o

    # -- sending --

    def send(self, data: bytes) -> None:
        self.sock.settimeout(10.0)
        self.sock.sendall(data)

    def send_frame(
        self, kind: int, opaque: int, msg_id: int | None = None, data: bytes = b"", **kw: Any
    ) -> bytes:
        frame = encode_frame(kind, opaque, msg_id, data, **kw)
        self.send(frame)
        return frame

    def post(self, msg_id: int, data: bytes, **kw: Any) -> bytes:
        return self.send_frame(POST, self.next_opaque(), msg_id, data, **kw)

    def shutdown_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    # -- receiving --

    def read_frame(self, timeout: float = 5.0) -> Frame:
        return self.reader.read_frame(timeout)

    def wait_closed(self, timeout: float = 5.0) -> list[Frame]:
        return self.reader.wait_closed(timeout)

    # -- built-ins --

    def whoami(self) -> bytes:
        return whoami_payload(self.name, self.version, self.buffersize, self.tags)

    def ping(self, echo: str, timeout: float = 5.0) -> bytes:
        """Pings the transport by hand and returns the echo."""
        opaque = self.next_opaque()
        self.send_frame(REQUEST, opaque, PING_ID, ping_payload(echo))
        reply = self.read_frame(timeout)
        assert (reply.kind, reply.opaque, reply.id) == (REQUEST, opaque, PING_ID), reply
        return decode_ping(reply.data)

    def handshake(self, transport: Any, timeout: float = 10.0) -> Whoami:
        """Runs ``transport.handshake()`` on a thread and plays our half by
        hand: answers its whoami REQUEST, sends ours and reads its answer.
        Returns the transport's whoami as it came off the wire."""
        with ThreadPoolExecutor(1, thread_name_prefix="raw-handshake") as pool:
            done = pool.submit(transport.handshake, timeout)
            try:
                req = self.read_frame(timeout)
                assert req.kind == REQUEST and req.id == WHOAMI_ID, (
                    f"want a whoami request, got {req}"
                )
                theirs = decode_whoami(req.data)
                self.send_frame(REQUEST, req.opaque, WHOAMI_ID, self.whoami())
                ours = self.next_opaque()
                self.send_frame(REQUEST, ours, WHOAMI_ID, self.whoami())
                resp = self.read_frame(timeout)
                assert (resp.kind, resp.opaque, resp.id) == (REQUEST, ours, WHOAMI_ID), resp
                assert decode_whoami(resp.data) == theirs
                peer = done.result(timeout)
                assert peer.name == self.name, peer
            except BaseException:
                transport.close()  # unblocks the handshake thread
                raise
        return theirs


Setup = Callable[[Any], object]


@contextlib.contextmanager
def raw_server(
    settings: dict[str, Any] | None = None,
    *,
    setup: Setup | None = None,
    handshake: bool = True,
    name: str = "lib-client",
    version: int = 1,
    tls: bool = False,
    **peer: Any,
) -> Iterator[tuple[RawPeer, Any]]:
    """A gofast.Transport that dialed a raw listening socket:
    ``with raw_server(...) as (raw, transport)``. ``setup(transport)`` runs
    before the handshake (subscribe there). Everything is closed on exit.
    ``tls``: the connection is TLS (the transport with conftest's client
    certificate; the raw end Python's ssl, which runs the TLS handshake
    within its first read, once ``transport.handshake()`` starts it)."""
    import gofast
    from conftest import certificates

    with socket.create_server(("127.0.0.1", 0)) as lis:
        lis.settimeout(10.0)

        def connect() -> tuple[Any, socket.socket]:
            transport = gofast.Transport.connect(
                lis.getsockname()[:2],
                name=name,
                version=version,
                settings=settings,
                tls=certificates().client() if tls else None,
            )
            try:
                conn = lis.accept()[0]
                if not tls:
                    return transport, conn
                ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                certificates().server_cert.configure_cert(ctx)
                return transport, ctx.wrap_socket(
                    conn, server_side=True, do_handshake_on_connect=False
                )
            except BaseException:
                transport.close()
                raise

        with _session(connect, setup, handshake, peer) as pair:
            yield pair


@contextlib.contextmanager
def raw_client(
    settings: dict[str, Any] | None = None,
    *,
    setup: Setup | None = None,
    handshake: bool = True,
    name: str = "lib-server",
    version: int = 1,
    **peer: Any,
) -> Iterator[tuple[RawPeer, Any]]:
    """A raw socket that dialed a gofast listener; the transport is the
    accepting side. Same contract as ``raw_server``."""
    import gofast

    with gofast.listen(("127.0.0.1", 0)) as lis:

        def connect() -> tuple[Any, socket.socket]:
            conn = socket.create_connection(lis.address, timeout=10.0)
            try:
                return lis.accept(name=name, version=version, settings=settings, timeout=10.0), conn
            except BaseException:
                conn.close()
                raise

        with _session(connect, setup, handshake, peer) as pair:
            yield pair


@contextlib.contextmanager
def _session(
    connect: Callable[[], tuple[Any, socket.socket]],
    setup: Setup | None,
    handshake: bool,
    peer: dict[str, Any],
) -> Iterator[tuple[RawPeer, Any]]:
    """What both ends share once connected: setup, the handshake by hand,
    and closing both the transport and the raw socket however it ends."""
    transport, conn = connect()
    try:
        raw = RawPeer(conn, **peer)
        if setup:
            setup(transport)
        if handshake:
            raw.handshake(transport)
        yield raw, transport
    finally:
        _close(transport, conn)


def _close(transport: Any, conn: socket.socket | None) -> None:
    try:
        if transport is not None:
            transport.close()
    finally:
        if conn is not None:
            conn.close()


# ---------------------------------------------------------------------------
# Small synchronisation helpers


# A thread-safe list a test can wait on: the same as conftest's Collector.
Inbox = Collector
