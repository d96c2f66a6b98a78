"""Ctrl-C ends asyncio.run() promptly while a gofast.aio call waits, on the
default loop and on uvloop. Each case runs in a child process (a wait that
ignored the signal would hang it, not the suite), which reports how long
after the signal asyncio.run() ended with KeyboardInterrupt."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import LOOPS

SCRIPT = Path(__file__).resolve().parent / "procs" / "aio_sigint.py"


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("call", ["handshake", "request", "post", "recv", "accept"])
def test_sigint_ends_asyncio_run_promptly(call: str, loop: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), call, loop],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"{call} on {loop} ignored SIGINT: {out} {err[-2000:]}")
    assert proc.returncode == 0, err[-3000:]
    result = json.loads(out.splitlines()[-1])
    # Promptly: the loop's shutdown included (executor waits end in slices).
    assert result.get("after_signal", 1e9) < 1.0, result
