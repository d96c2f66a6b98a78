"""Compare gofast for Python with grpcio, pyzmq, asyncio streams, grpc.aio,
zmq.asyncio and raw sockets.

    python -m benches.compare            # full run (1M one-way / stream messages)
    python -m benches.compare --quick    # short run (50k), about a minute
    python -m benches.compare --repeat 3 # each cell thrice, the median run shown

Run from the repository root. Every workload is run against every system that
has it, one cell at a time (systems interleaved within a workload so that
ratios are measured close together), each cell with a fresh server process and
a fresh client process on 127.0.0.1, bounded by --cell-timeout. Prints the
table, writes it as markdown (--markdown) and a PNG chart (--chart); exits 1
if any cell failed or timed out.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from . import machine, report
from .runner import CellResult, run_cell
from .systems import by_name as systems_by_name
from .workloads import by_name as workloads_by_name

HERE = Path(__file__).resolve().parent


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m benches.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--quick", action="store_true", help="short run: 50k instead of 1M messages")
    ap.add_argument("--chart", type=Path, default=HERE / "latest.png", help="PNG chart path")
    ap.add_argument("--markdown", type=Path, default=HERE / "latest.md", help="markdown table path")
    ap.add_argument(
        "--systems",
        help="comma-separated subset, by name as in the table or by module: gofast, "
        "gofast_batch, gofast_unix, gofast_tls, grpc, zmq, raw, gofast_aio, asyncio, "
        "grpc_aio, zmq_aio (all when omitted)",
    )
    ap.add_argument(
        "--workloads",
        help="comma-separated subset (oneway-64,oneway-512,request,request16,stream,bulk-64k)",
    )
    ap.add_argument(
        "--cell-timeout",
        type=float,
        default=None,
        help="seconds one cell may take before it is killed (default 60 quick, 300 full)",
    )
    ap.add_argument(
        "--scale", type=float, default=1.0, help="multiply every message count (e.g. 0.1)"
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per cell, in interleaved rounds; the table shows each cell's median run",
    )
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    return args


def median_run(runs: list[CellResult], unit: str) -> CellResult:
    """The run with the median rate (the lower one of an even count), whole,
    so its CPU, RSS and latencies belong with its rate; a failed run wins, so
    that no failure is hidden."""
    failed = [r for r in runs if not r.ok]
    if failed:
        return failed[0]
    ranked = sorted(runs, key=lambda r: r.rate(unit) or 0.0)
    return ranked[(len(ranked) - 1) // 2]


def _terminate(signum: int, _frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C, so the running cell still kills its children."""
    raise SystemExit(128 + signum)


def main(argv: list[str]) -> int:
    args = parse(argv)
    signal.signal(signal.SIGTERM, _terminate)
    timeout = args.cell_timeout or (60.0 if args.quick else 300.0)
    workloads = workloads_by_name(args.workloads)
    systems = systems_by_name(args.systems)
    info = machine.describe()
    print(f"# {machine.one_line(info)}", flush=True)
    began = time.monotonic()
    results: list[CellResult] = []
    for w in workloads:
        runs: dict[str, list[CellResult]] = {}
        # Rounds over all systems, so that each system's runs spread over the
        # same stretch of a noisy machine's time.
        for _ in range(args.repeat):
            for s in systems:
                if w.kind not in s.kinds:
                    continue
                spec = w.spec(s.name, args.quick, args.scale)
                print(f"  {w.name:<11} {s.name:<11} n={spec.n:<10,}", end="", flush=True)
                r = run_cell(spec, timeout)
                runs.setdefault(s.name, []).append(r)
                rate = r.rate(w.unit)
                shown = f"{rate:>12,.0f} {w.unit}" if rate is not None else r.status
                print(f" {shown}  ({r.wall:.1f} s)", flush=True)
        results.extend(median_run(rs, w.unit) for rs in runs.values())
    minutes = (time.monotonic() - began) / 60
    body = report.rows(workloads, results)
    print()
    print(report.text_table(body))
    print()
    print(report.NOTES)
    counts = ", ".join(
        f"{w.name} {w.spec('gofast', args.quick, args.scale).n:,}" for w in workloads
    )
    if args.repeat > 1:
        counts += f"; each cell the median of {args.repeat} runs"
    command = shlex.join(["python", "-m", "benches.compare", *argv])
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text(report.markdown(body, info, command, counts, minutes))
    report.chart(args.chart, workloads, results, info)
    print(f"\n{len(results)} cells in {minutes:.1f} min; wrote {args.markdown} and {args.chart}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
