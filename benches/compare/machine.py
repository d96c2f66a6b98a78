"""What the numbers were measured on, for the header of the table and chart.

Read from /proc and package metadata, never by importing the systems, so the
runner's own process stays small and the header costs nothing.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cores() -> int:
    """Cores this process may run on (what nproc prints)."""
    return len(os.sched_getaffinity(0))


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def tree_revision() -> str:
    """The checkout's commit (and "-dirty"), to tie numbers to code; note that
    the gofast measured is the installed one, built from whatever tree it was."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def describe() -> dict[str, str]:
    return {
        "nproc": str(cores()),
        "cpu": cpu_model(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "kernel": platform.release(),
        "gofast": _version("gofast-transport"),  # the distribution's name
        "grpcio": _version("grpcio"),
        "pyzmq": _version("pyzmq"),
        "tree": tree_revision(),
    }


def one_line(info: dict[str, str]) -> str:
    return (
        f"nproc {info['nproc']}, {info['cpu']}, {info['python']}, Linux {info['kernel']}; "
        f"gofast {info['gofast']} (tree {info['tree']}), grpcio {info['grpcio']}, "
        f"pyzmq {info['pyzmq']}"
    )
