"""Entry point of a cell's server or client process.

    python -m benches.compare.child server SPEC_JSON
    python -m benches.compare.child client SPEC_JSON ENDPOINT_JSON

A server serves in background threads, prints its endpoint, and on a line on
stdin (the runner's "stop", sent once the client is done) prints its CPU time
since it was ready, its peak RSS and what it counted. A client drives the
workload and prints its Outcome with its own CPU time and peak RSS. Every line
meant for the runner starts with MARK, so a library writing to stdout cannot
confuse it. Both leave with os._exit: a library's shutdown is not measured and
cannot hang the cell.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from types import ModuleType
from typing import Any

from .measure import cpu_seconds, peak_rss_kib, percentile_us
from .spec import Outcome, ServerHandle, Spec
from .systems import SYSTEMS

MARK = "@@compare "


def emit(obj: dict[str, Any]) -> None:
    """One JSON line for the runner."""
    sys.stdout.write(MARK + json.dumps(obj) + "\n")
    sys.stdout.flush()


def load(system: str) -> ModuleType:
    """Imports only this system's module (and so only its libraries)."""
    for info in SYSTEMS:
        if info.name == system:
            return importlib.import_module(f"{__package__}.systems.{info.module}")
    raise SystemExit(f"unknown system {system!r}")


def run_server(spec: Spec) -> None:
    handle: ServerHandle = load(spec.system).serve(spec)
    cpu0 = cpu_seconds()
    emit({"endpoint": handle.endpoint})
    sys.stdin.readline()
    emit(
        {
            "cpu_s": cpu_seconds() - cpu0,
            "maxrss_kib": peak_rss_kib(),
            "received": handle.received(),
        }
    )


def run_client(spec: Spec, endpoint: dict[str, Any]) -> None:
    module = load(spec.system)
    cpu0 = cpu_seconds()
    outcome: Outcome = module.drive(spec, endpoint)
    cpu = cpu_seconds() - cpu0
    lat = sorted(outcome.latencies_ns)
    emit(
        {
            "done": outcome.done,
            "seconds": outcome.seconds,
            "samples": len(lat),
            "p50_us": percentile_us(lat, 50),
            "p99_us": percentile_us(lat, 99),
            "cpu_s": cpu,
            "maxrss_kib": peak_rss_kib(),
        }
    )


def main(argv: list[str]) -> None:
    role, spec = argv[0], Spec.from_json(argv[1])
    try:
        if role == "server":
            run_server(spec)
        else:
            run_client(spec, json.loads(argv[2]))
    except BaseException as exc:  # reported to the runner, then exit
        traceback.print_exc()
        emit({"error": f"{type(exc).__name__}: {exc}"})
        sys.stderr.flush()
        os._exit(1)
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
