"""A stream cut by the connection's end is not a finished stream:
iteration and recv() raise ConnectionClosed, a callback gets None as at any
end, and `stream.error` says which it was."""

from __future__ import annotations

from typing import Any

import pytest

import gofast
from conftest import Collector
from gofast import BinMessage
from wire import STREAM_MSG, STREAM_START, encode_finish, raw_server


def opened(raw: Any) -> int:
    start = raw.read_frame()
    assert start.kind == STREAM_START
    raw.send_frame(STREAM_MSG, start.opaque, 100, b"one")
    return int(start.opaque)


def test_iterating_a_cut_stream_raises_connection_closed() -> None:
    with raw_server() as (raw, t):
        stream = t.stream(BinMessage(100, b"open"))
        opened(raw)
        assert next(stream).data == b"one"
        raw.sock.close()  # the peer dies mid-stream
        with pytest.raises(gofast.ConnectionClosed, match="cut"):
            next(stream)
        with pytest.raises(gofast.ConnectionClosed):
            stream.recv(timeout=5)  # it stays cut
        assert isinstance(stream.error, gofast.ConnectionClosed)


def test_a_finished_stream_ends_iteration_without_error() -> None:
    with raw_server() as (raw, t):
        stream = t.stream(BinMessage(100, b"open"))
        opaque = opened(raw)
        raw.send(encode_finish(opaque))
        assert [m.data for m in stream] == [b"one"]
        assert stream.error is None
        assert stream.recv(timeout=5) is None


def test_a_callback_learns_why_its_stream_ended(collector: Collector) -> None:
    with raw_server() as (raw, t):
        stream = t.stream(BinMessage(100, b"open"), collector.append)
        opened(raw)
        collector.wait_for(1)
        assert stream.error is None
        raw.sock.close()
        got = collector.wait_for(2)
        assert got[1] is None
        assert isinstance(stream.error, gofast.ConnectionClosed)


def test_our_own_close_cuts_open_streams_too() -> None:
    with raw_server() as (raw, t):
        stream = t.stream(BinMessage(100, b"open"))
        opened(raw)
        t.close()
        assert next(stream).data == b"one"
        with pytest.raises(gofast.ConnectionClosed, match="closed by this side"):
            next(stream)
