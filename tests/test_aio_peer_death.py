"""The async twin of test_peer_death.py: a peer SIGKILLed mid-exchange.
Every await in flight (posts, stream sends and receives, requests the peer
never answered, a request waited on while its handler answers the peer's)
fails promptly with ConnectionClosed, never hangs, and the loop goes on
serving. The process under test is a child (tests/procs), so a hang fails
this test instead of hanging the suite; each loop is tested."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import LOOPS

SENDER = Path(__file__).resolve().parent / "procs" / "aio_sender_under_fault.py"
REPS = 10


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("mode", ["post", "stream", "respond", "request"])
def test_peer_killed_mid_exchange(mode: str, loop: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(SENDER), mode, str(REPS), loop],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=60 + REPS)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the sender hung ({mode}, {loop}); it printed:\n{out}\n{err[-3000:]}")
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [json.loads(line) for line in out.splitlines()]
    rounds, last = lines[:-1], lines[-1]
    assert len(rounds) == REPS
    for r in rounds:
        assert r["errors"] == ["ConnectionClosed"], r
        assert r["after_kill"] < 1.0, r
    assert last == {"served": True}
