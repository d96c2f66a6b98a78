"""The workloads, their units and how many messages each moves.

The full counts follow the brief (1,000,000 one-way and stream messages); the
--quick counts are small enough for a run of about two minutes on two cores.
Request workloads move fewer messages because each one waits a round trip.
"""

from __future__ import annotations

from dataclasses import dataclass

from .spec import Kind, Spec


@dataclass(frozen=True)
class Workload:
    """One row group of the table."""

    name: str
    title: str
    kind: Kind
    size: int
    full_n: int
    quick_n: int
    warmup: int = 0

    @property
    def unit(self) -> str:
        """Bulk is about bytes, everything else about messages."""
        return "MB/s" if self.kind == "bulk" else "msg/s"

    def spec(self, system: str, quick: bool, scale: float = 1.0) -> Spec:
        n = max(1, int((self.quick_n if quick else self.full_n) * scale))
        return Spec(system, self.name, self.kind, n, self.size, self.warmup)


WORKLOADS: tuple[Workload, ...] = (
    Workload("oneway-64", "one-way 64 B", "oneway", 64, 1_000_000, 50_000),
    Workload("oneway-512", "one-way 512 B", "oneway", 512, 1_000_000, 50_000),
    Workload("request", "request-response 64 B, sequential", "request", 64, 20_000, 2_000, 200),
    Workload(
        "request16", "request-response 64 B, 16 concurrent", "request16", 64, 40_000, 4_000, 320
    ),
    Workload("stream", "one stream server->client 64 B", "stream", 64, 1_000_000, 50_000),
    Workload("bulk-64k", "bulk 64 KiB messages", "bulk", 65_536, 16_384, 2_048),
)


def by_name(names: str | None) -> list[Workload]:
    """The workloads named in a comma-separated list (all when None)."""
    if not names:
        return list(WORKLOADS)
    table = {w.name: w for w in WORKLOADS}
    unknown = [x for x in names.split(",") if x not in table]
    if unknown:
        raise SystemExit(f"unknown workload(s): {', '.join(unknown)}; known: {', '.join(table)}")
    return [table[x] for x in names.split(",")]
