"""A peer that dies while this side sends: the sender gets ConnectionClosed
promptly, and the process goes on serving (issue: the writer thread once
logged while holding the writer's lock, and a poster holding the GIL froze
the whole process). The process under test is a child (tests/procs), so a
freeze fails this test instead of hanging the suite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SENDER = Path(__file__).resolve().parent / "procs" / "sender_under_fault.py"
REPS = 25


@pytest.mark.parametrize("reader", ["thread", "shared"])
@pytest.mark.parametrize("level", ["WARNING", "CRITICAL"])
@pytest.mark.parametrize("mode", ["post", "stream", "respond"])
def test_peer_killed_while_sending(mode: str, level: str, reader: str) -> None:
    """``reader``: the sender's transports read by their own reader thread,
    or by the shared reader (which then also runs the respond handler)."""
    proc = subprocess.Popen(
        [sys.executable, str(SENDER), mode, str(REPS), level, reader],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=60 + REPS)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(
            f"the sender froze ({mode}, {level}, {reader}); it printed:\n{out}\n{err[-3000:]}"
        )
    assert proc.returncode == 0, err[-3000:]
    lines = [json.loads(line) for line in out.splitlines()]
    rounds, last = lines[:-1], lines[-1]
    assert len(rounds) == REPS
    for r in rounds:
        assert r["error"] == "ConnectionClosed", r
        assert r["after_kill"] < 1.0, r
    assert last == {"served": True}
