"""Limits against a hostile peer: how many log lines its bad frames may cost.
A raw peer (tests/wire.py) plays the hostile side against a real transport."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator

import pytest

import gofast
import wire
from conftest import Collector
from wire import encode_finish, encode_frame

POST_ID = 100
TIMEOUT = 10.0

# The log limit (src/log_limit.rs): a burst of lines, then a steady rate.
LOG_BURST, LOG_PER_SECOND = 20, 5


class Records(logging.Handler):
    """Every record of the ``gofast`` loggers, from any thread."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records = Collector()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def warnings(self) -> list[str]:
        return [r.getMessage() for r in self.records.snapshot() if r.levelno >= logging.WARNING]


@pytest.fixture
def gofast_log() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger("gofast")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


# ---------------------------------------------------------------------------
# The log limit


def test_a_flood_of_bad_frames_costs_a_few_log_lines(gofast_log: Records) -> None:
    """20,000 frames that are each dropped (half by the decoder, half by
    dispatch): every one counted, but only a handful logged."""
    posts = Collector()

    def setup(t: gofast.Transport) -> None:
        t.subscribe(POST_ID, lambda s, m: posts.append(m.data))

    with wire.raw_server(setup=setup, name="victim") as (raw, t):
        before = dict(t.stats())
        base = len(gofast_log.warnings())
        bad = [
            encode_frame(0x82, 5000, POST_ID, b"x") if i % 2 else encode_finish(4321)
            for i in range(20_000)
        ]
        began = time.monotonic()
        raw.send(b"".join(bad))
        raw.post(POST_ID, b"after")
        posts.wait_for(1, TIMEOUT)
        elapsed = time.monotonic() - began
        lines = len(gofast_log.warnings()) - base
        assert lines <= LOG_BURST + LOG_PER_SECOND * elapsed + 1, (lines, elapsed)
        after = dict(t.stats())
        assert after["n_mdrops"] - before["n_mdrops"] == len(bad)
        assert after["n_dropped"] - before["n_dropped"] == sum(map(len, bad))
        suppressed = after["n_log_suppressed"] - before["n_log_suppressed"]
        assert suppressed == len(bad) - lines

        # Once the rate allows a line again, it says how many were left out:
        # with it, the lines' counts add up to every line left out.
        deadline = time.monotonic() + TIMEOUT
        while len(gofast_log.warnings()) == base + lines:
            assert time.monotonic() < deadline, "no line logged after the flood"
            raw.send(encode_finish(4321))
            assert raw.ping("sync") == b"sync"
        told = [
            int(m.group(1))
            for w in gofast_log.warnings()[base:]
            if (m := re.search(r"\((\d+) more such warnings were left out", w))
        ]
        assert told, gofast_log.warnings()[-1]
        assert sum(told) == t.stats()["n_log_suppressed"] - before["n_log_suppressed"]
        assert raw.ping("still there") == b"still there"
        assert not t.closed
