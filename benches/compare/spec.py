"""What one cell is and what its client measured, passed between processes as JSON.

A cell's server and client are separate processes started by the runner; they
learn what to do from a :class:`Spec` on their command line and answer with one
JSON line each, so these types are kept flat and JSON-friendly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Kind = Literal["oneway", "request", "request16", "stream", "bulk"]
"""oneway/bulk: client -> server messages, the server counts them and the client
asks for that count at the end; request: sequential round trips; request16:
round trips with 16 outstanding; stream: one stream of messages server -> client."""

KINDS: tuple[Kind, ...] = ("oneway", "request", "request16", "stream", "bulk")

CONCURRENCY = 16
"""Requesters (threads, tasks or outstanding requests) in a request16 cell."""


@dataclass(frozen=True)
class Spec:
    """One cell: which system, which workload, how many messages of what size."""

    system: str
    workload: str
    kind: Kind
    n: int
    size: int
    warmup: int = 0
    concurrency: int = CONCURRENCY

    def payload(self) -> bytes:
        """The payload every system moves: the same ``size`` raw bytes."""
        return bytes(i & 0xFF for i in range(self.size))

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Spec:
        return cls(**json.loads(text))


@dataclass
class Outcome:
    """What a client did: ``done`` messages (confirmed by the receiver) in
    ``seconds``, and for request kinds the round-trip time of each request."""

    done: int
    seconds: float
    latencies_ns: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class ServerHandle:
    """A server serving in background threads: where to reach it, and how many
    messages it has counted (one-way and bulk kinds; 0 where it does not count)."""

    endpoint: dict[str, Any]
    received: Callable[[], int]


Endpoint = dict[str, Any]
"""What a server prints for its clients: a port, or a socket path, and so on."""


class CellError(Exception):
    """A cell ran but its numbers cannot be trusted (e.g. messages were lost)."""
