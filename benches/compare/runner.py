"""Runs one cell: a server process and a client process, under one deadline.

Both children are started in their own session (process group), and whatever
happens (a result, an error, the deadline, Ctrl-C) both groups are killed by
their ids before the cell returns, so no cell can hang the run or leave a
process behind. Children talk to the runner only through MARK-prefixed JSON
lines on stdout; their stderr goes to a temporary file quoted on failure.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .child import MARK
from .spec import Spec

ROOT = Path(__file__).resolve().parents[2]
SERVER_REPORT_GRACE = 15.0
"""Seconds a server has, after the client is done, to report (within the deadline)."""
WAKE_EVERY = 0.25
"""The longest the main thread sleeps at once: a SIGTERM delivered to another
thread only runs its Python handler when the main thread wakes."""


@dataclass
class CellResult:
    """A cell's numbers; ``status`` is "ok", "timeout", or "error: why"."""

    workload: str
    system: str
    status: str
    n: int = 0
    size: int = 0
    done: int = 0
    seconds: float = 0.0
    p50_us: float | None = None
    p99_us: float | None = None
    cpu_client: float | None = None
    cpu_server: float | None = None
    rss_client_kib: int | None = None
    rss_server_kib: int | None = None
    wall: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def rate(self, unit: str) -> float | None:
        """Messages per second, or payload megabytes (10^6 B) per second."""
        if not self.ok or self.seconds <= 0:
            return None
        per_s = self.done / self.seconds
        return per_s * self.size / 1e6 if unit == "MB/s" else per_s


class ChildFailed(Exception):
    """A child exited, or said it failed, before giving the line we waited for."""


class CellTimeout(Exception):
    """The cell's deadline passed."""


class Child:
    """One child process and the runner's lines from it."""

    def __init__(self, args: list[str], label: str) -> None:
        self.label = label
        self.stderr: IO[bytes] = tempfile.TemporaryFile()
        env = dict(os.environ, GRPC_VERBOSITY="ERROR", PYTHONDONTWRITEBYTECODE="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"{__package__}.child", *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            start_new_session=True,
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace")
            if line.startswith(MARK):
                self.lines.put(json.loads(line[len(MARK) :]))
        self.lines.put(None)

    def message(self, deadline: float) -> dict[str, Any]:
        """The next line from the child, or CellTimeout / ChildFailed."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CellTimeout
            try:  # in slices: a signal for the main thread runs its handler between them
                msg = self.lines.get(timeout=min(left, WAKE_EVERY))
                break
            except queue.Empty:
                continue
        if msg is None:
            raise ChildFailed(f"{self.label} exited: {self.stderr_tail()}")
        if "error" in msg:
            raise ChildFailed(f"{self.label}: {msg['error']}")
        return msg

    def stop(self) -> None:
        """Asks a server for its final report (a line on its stdin)."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(b"stop\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass

    def stderr_tail(self) -> str:
        self.stderr.seek(0)
        lines = self.stderr.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"exit code {self.proc.poll()}"

    def kill(self) -> None:
        """Kills the child's whole process group (its id is the child's pid)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.stderr):
            if f is not None:
                f.close()


def run_cell(spec: Spec, timeout: float) -> CellResult:
    """Runs ``spec`` with a server and a client process, within ``timeout`` seconds."""
    result = CellResult(spec.workload, spec.system, "ok", spec.n, spec.size)
    began = time.monotonic()
    deadline = began + timeout
    children: list[Child] = []
    try:
        server = Child(["server", spec.to_json()], "server")
        children.append(server)
        endpoint = server.message(deadline)["endpoint"]
        client = Child(["client", spec.to_json(), json.dumps(endpoint)], "client")
        children.append(client)
        got = client.message(deadline)
        result.done, result.seconds = got["done"], got["seconds"]
        result.p50_us, result.p99_us = got["p50_us"], got["p99_us"]
        result.cpu_client, result.rss_client_kib = got["cpu_s"], got["maxrss_kib"]
        server.stop()
        report = server.message(min(deadline, time.monotonic() + SERVER_REPORT_GRACE))
        result.cpu_server, result.rss_server_kib = report["cpu_s"], report["maxrss_kib"]
        if spec.kind in ("oneway", "bulk") and report["received"] != spec.n:
            result.status = f"error: server counted {report['received']} of {spec.n}"
    except CellTimeout:
        result.status = "timeout"
    except ChildFailed as exc:
        result.status = f"error: {exc}"
    finally:
        for child in children:
            child.kill()
        result.wall = time.monotonic() - began
    return result
