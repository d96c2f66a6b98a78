"""The results as a printed table, a markdown file and a PNG chart.

Every ratio is against gofast in the same workload of the same run: on a
shared, noisy machine only ratios measured minutes apart mean anything. The
asyncio group (both sides asyncio programs) also gets its ratio to asyncio
streams, the baseline such a program is written on.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .machine import one_line
from .runner import CellResult
from .systems import GO_REFERENCE, SYSTEMS
from .workloads import Workload

COLUMNS = (
    "workload",
    "system",
    "throughput",
    "p50 µs",
    "p99 µs",
    "CPU s client",
    "CPU s server",
    "CPU µs/msg",
    "RSS MiB client",
    "RSS MiB server",
    "vs gofast",
    "vs asyncio",
)
NUMERIC = frozenset(COLUMNS[2:])
ASYNCIO = frozenset(s.name for s in SYSTEMS if s.asyncio)

NOTES = (
    "throughput: messages the receiver confirmed per second of the client's wall "
    "time (bulk: payload MB/s, 10^6 B); "
    "p50/p99: round trip of every timed request; "
    "CPU s: user+system of each process (all threads) from ready to done; "
    "CPU µs/msg: both sides' CPU per message; "
    "RSS: peak resident set of each process, interpreter and libraries included; "
    "vs gofast: this row's throughput / gofast's in the same workload (>1 is faster); "
    "vs asyncio: the same against asyncio streams, for the asyncio group."
)


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _cpu(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.2f}" if seconds >= 1 else f"{seconds:.3f}"


def _ratio(rate: float, base: float | None) -> str:
    """Two decimals, or two significant digits below 0.1 (grpcio's streams)."""
    if not base:
        return "-"
    r = rate / base
    return f"{r:.2f}×" if r >= 0.1 else f"{r:.2g}×"


def _mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.0f}"


def _row(w: Workload, r: CellResult, base: float | None, base_aio: float | None) -> list[str]:
    rate = r.rate(w.unit)
    if rate is None:
        return [w.title, r.system, r.status] + ["-"] * (len(COLUMNS) - 3)
    cpu = (r.cpu_client or 0.0) + (r.cpu_server or 0.0)
    return [
        w.title,
        r.system,
        f"{rate:,.0f} {w.unit}",
        _num(r.p50_us, ".0f"),
        _num(r.p99_us, ".0f"),
        _cpu(r.cpu_client),
        _cpu(r.cpu_server),
        f"{cpu / r.done * 1e6:.1f}" if r.done else "-",
        _mib(r.rss_client_kib),
        _mib(r.rss_server_kib),
        _ratio(rate, base),
        _ratio(rate, base_aio) if r.system in ASYNCIO else "-",
    ]


def rows(workloads: Sequence[Workload], results: Sequence[CellResult]) -> list[list[str]]:
    """One row per cell, systems in a fixed order, then the Go reference row."""
    table: list[list[str]] = []
    order = {s.name: i for i, s in enumerate(SYSTEMS)}
    for w in workloads:
        cells = sorted((r for r in results if r.workload == w.name), key=lambda r: order[r.system])
        base = next((r.rate(w.unit) for r in cells if r.system == "gofast"), None)
        base_aio = next((r.rate(w.unit) for r in cells if r.system == "asyncio"), None)
        table.extend(_row(w, r, base, base_aio) for r in cells)
        table.append([w.title, "Go reference", GO_REFERENCE] + ["-"] * (len(COLUMNS) - 3))
    return table


def text_table(body: list[list[str]]) -> str:
    widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(COLUMNS)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if col in NUMERIC else c.ljust(w)
            for c, w, col in zip(cells, widths, COLUMNS, strict=True)
        ).rstrip()

    out = [line(COLUMNS), line(["-" * w for w in widths])]
    previous = ""
    for r in body:
        if previous and r[0] != previous:
            out.append("")
        previous = r[0]
        out.append(line(r))
    return "\n".join(out)


def markdown(
    body: list[list[str]], machine: dict[str, str], command: str, counts: str, minutes: float
) -> str:
    align = ["---:" if c in NUMERIC else ":---" for c in COLUMNS]
    lines = [
        "### gofast for Python beside grpcio, pyzmq, asyncio streams, grpc.aio, zmq.asyncio "
        "and raw sockets",
        "",
        f"Machine: {one_line(machine)}.  ",
        f"Command: `{command}` ({minutes:.1f} min).  ",
        f"Messages per cell: {counts}.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "| " + " | ".join(align) + " |",
    ]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in body]
    lines += ["", NOTES, ""]
    return "\n".join(lines)


def chart(
    path: Path,
    workloads: Sequence[Workload],
    results: Sequence[CellResult],
    machine: dict[str, str],
) -> None:
    """One panel per workload, a bar per system, each labelled with its ratio to
    gofast (to asyncio streams in a run without gofast); a failed cell is an
    empty slot labelled with its status."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import StrMethodFormatter

    names = [s.name for s in SYSTEMS]
    # In SYSTEMS order: gofast and its batch API in two blues, then the others
    # (the asyncio group from gofast aio on), one colour each.
    palette = [
        "#1f77b4",
        "#6baed6",
        "#9ecae1",
        "#c6dbef",
        "#ff7f0e",
        "#2ca02c",
        "#7f7f7f",
        "#17becf",
        "#d62728",
        "#ffbb78",
        "#98df8a",
    ]
    colours = {name: palette[i % len(palette)] for i, name in enumerate(names)}
    cols = 3
    nrows = (len(workloads) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 3.9 * nrows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax, w in zip(flat, workloads, strict=False):
        cells = [r for r in results if r.workload == w.name]
        cells.sort(key=lambda r: names.index(r.system))
        base = next((r.rate(w.unit) for r in cells if r.system == "gofast"), None)
        if base is None:
            base = next((r.rate(w.unit) for r in cells if r.system == "asyncio"), None)
        heights = [r.rate(w.unit) or 0.0 for r in cells]
        bars = ax.bar([r.system for r in cells], heights, color=[colours[r.system] for r in cells])
        top = max(heights, default=0.0) or 1.0
        for bar, r, h in zip(bars, cells, heights, strict=True):
            label = _ratio(h, base) if r.ok else r.status.split(":")[0]
            ax.text(
                bar.get_x() + bar.get_width() / 2,
                h + top * 0.02,
                label,
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.set_title(w.title, fontsize=10)
        ax.set_ylabel(w.unit)
        ax.set_ylim(0, top * 1.18)
        ax.tick_params(axis="x", labelsize=8, labelrotation=20)
        ax.grid(axis="y", alpha=0.3)
        ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    for ax in flat[len(workloads) :]:
        ax.axis("off")
    fig.suptitle(
        "gofast for Python vs others, 127.0.0.1, client and server in separate processes\n"
        + one_line(machine),
        fontsize=9,
    )
    fig.text(
        0.01,
        0.005,
        f"Go reference: {GO_REFERENCE}. Labels: throughput / gofast's in the same panel "
        "(asyncio's where gofast was not run).",
        fontsize=8,
    )
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
