"""CPU time, peak RSS and latency percentiles, measured inside a cell's process.

Each side reports its own numbers with ``resource.getrusage`` (all threads of the
process, user + system), so a system that moves work into native threads or into
the kernel is charged for it as well.
"""

from __future__ import annotations

import math
import resource


def cpu_seconds() -> float:
    """User + system CPU time of this process (every thread) so far."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def peak_rss_kib() -> int:
    """Peak resident set size of this process in KiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def percentile_us(sorted_ns: list[int], pct: float) -> float | None:
    """Nearest-rank percentile of sorted nanosecond samples, in microseconds."""
    if not sorted_ns:
        return None
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_ns)))
    return sorted_ns[rank - 1] / 1000.0
