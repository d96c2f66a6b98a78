"""The typed API rejects wrong uses at type-check time: mypy --strict on
``typing/misuse.py`` reports exactly the errors its ``# E:`` comments name."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent / "typing"
SOURCE = HERE / "misuse.py"


def expected_errors() -> set[tuple[int, str]]:
    found = set()
    for number, line in enumerate(SOURCE.read_text().splitlines(), start=1):
        m = re.search(r"# E: ([a-z-]+)$", line)
        if m:
            found.add((number, m.group(1)))
    return found


def test_mypy_rejects_each_wrong_use_and_nothing_else() -> None:
    pytest.importorskip("mypy")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", SOURCE.name],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=HERE,
        env={**os.environ, "MYPY_CACHE_DIR": os.devnull},
    )
    got = {
        (int(m.group(1)), m.group(2))
        for m in re.finditer(r"^misuse\.py:(\d+): error: .*\[([a-z-]+)\]$", done.stdout, re.M)
    }
    expected = expected_errors()
    assert len(expected) >= 10, "the misuse file lost its expectations"
    assert got == expected, done.stdout + done.stderr
