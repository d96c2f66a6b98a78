"""Ctrl-C reaches a thread blocked in any gofast call within 100 ms. Each
case runs in a child process (a call that ignores the signal would hang it,
not the suite), which reports how long the KeyboardInterrupt took."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "procs" / "sigint_during.py"


CALLS = ["handshake", "post", "post_many", "stream.send", "request", "recv"]


@pytest.mark.parametrize(
    "call, reader",
    [(c, "thread") for c in [*CALLS, "accept"]] + [(c, "shared") for c in CALLS],
)
def test_sigint_interrupts_a_blocked_call(call: str, reader: str) -> None:
    """``reader``: the transport read by its own reader thread, or by the
    shared reader (``accept`` has no transport yet)."""
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), call, reader],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"{call} ignored SIGINT: {out} {err[-2000:]}")
    assert proc.returncode == 0, err[-3000:]
    result = json.loads(out.splitlines()[-1])
    assert result.get("after_signal", 1e9) < 0.1, result


def test_a_post_with_a_timeout_gives_up_when_the_peer_stops_reading() -> None:
    import gofast
    from gofast import BinMessage
    from wire import raw_server

    with raw_server({"pending.max": 64 * 1024}) as (raw, t):
        stream = t.stream(BinMessage(100, b"open"), lambda m: None)
        with pytest.raises(gofast.Timeout, match="not reading"):
            for _ in range(100_000):
                t.post(BinMessage(100, b"x" * 4096), timeout=0.2)
        with pytest.raises(gofast.Timeout):
            t.post_many([BinMessage(100, b"x" * 4096)] * 4, timeout=0.05)
        with pytest.raises(gofast.Timeout):
            for _ in range(100_000):
                stream.send(BinMessage(100, b"x" * 4096), timeout=0.05)
