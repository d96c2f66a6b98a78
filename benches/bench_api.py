"""pytest-benchmark timings of single Python API calls (one process).

    python -m pytest benches/bench_api.py --benchmark-only -p no:cacheprovider

Not part of the test suite (testpaths is tests/). Throughput between two
processes is benches/compare (``scripts/bench``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import gofast

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from conftest import Pair, make_pair  # noqa: E402


@dataclass
class Note(gofast.CborMessage, id=100):
    seq: int
    text: str


RAW = gofast.BinMessage(101, b"x" * 64)


@pytest.fixture(scope="module")
def echo_pair() -> Iterator[Pair]:
    def server(t: gofast.Transport) -> None:
        t.subscribe(100, lambda s, m: None)
        t.subscribe(101, lambda s, m: s.respond(m) if s is not None else None)

    p = make_pair(server_setup=server)
    yield p
    p.close()


def test_cbor_encode(benchmark: Any) -> None:
    benchmark(Note(1, "hello").encode)


def test_cbor_decode(benchmark: Any) -> None:
    data = Note(1, "hello").encode()
    benchmark(Note.decode, data)


def test_post_raw_64b(benchmark: Any, echo_pair: Pair) -> None:
    benchmark(echo_pair.client.post, gofast.BinMessage(100, b"x" * 64))


def test_post_raw_64kib(benchmark: Any, echo_pair: Pair) -> None:
    """Large enough that the writer lends the bytes instead of copying them."""
    benchmark(echo_pair.client.post, gofast.BinMessage(100, b"x" * 65_536))


def test_post_cbor(benchmark: Any, echo_pair: Pair) -> None:
    benchmark(echo_pair.client.post, Note(1, "hello"))


def test_post_many_1000(benchmark: Any, echo_pair: Pair) -> None:
    batch = [gofast.BinMessage(100, b"x" * 64)] * 1000
    benchmark(echo_pair.client.post_many, batch)


def test_request_round_trip_same_process(benchmark: Any, echo_pair: Pair) -> None:
    benchmark(echo_pair.client.request, RAW)


def test_stats(benchmark: Any, echo_pair: Pair) -> None:
    benchmark(echo_pair.client.stats)
