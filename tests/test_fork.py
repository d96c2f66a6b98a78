"""After os.fork(), inherited transports are inert in the child: using one
raises UsageError, and closing it or exiting never touches the parent's
connection (the child has none of the parent's threads)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "procs" / "fork_child.py"


@pytest.mark.parametrize("reader", ["thread", "shared"])
def test_a_forked_child_leaves_the_parents_connection_alone(reader: str) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), reader], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-3000:]
    child, parent = (json.loads(line) for line in done.stdout.splitlines())
    assert child["child_own_pair"] is True
    assert len(child["child_refused"]) == 8, child
    assert "PanicException" not in done.stderr
    assert parent == {"child_exit": 0, "parent_reply": "after fork", "parent_open": True}
