"""The async twin of test_fork.py: after os.fork(), inherited gofast.aio
transports are inert in the child. Every call raises UsageError (naming
the fork, never a hang nor an error about futures of another loop),
``aclose()`` does nothing, as ``close()``, and the parent's connection
carries on. Runs tests/procs/aio_fork_child.py on each loop."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import LOOPS

SCRIPT = Path(__file__).resolve().parent / "procs" / "aio_fork_child.py"


@pytest.mark.parametrize("loop", LOOPS)
def test_a_forked_child_leaves_the_parents_aio_connection_alone(loop: str) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), loop], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-3000:]
    child, parent = (json.loads(line) for line in done.stdout.splitlines())
    assert child["child_own_pair"] is True
    assert len(child["child_refused"]) == 10, (child, done.stderr[-3000:])
    assert "PanicException" not in done.stderr
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert parent == {"child_exit": 0, "parent_reply": "after fork", "parent_open": True}
