"""The systems compared, as static data: importing this does not import any of them.

A cell's processes import only their own system's module (``child.py`` does it
by name), so the peak RSS a side reports holds that system's libraries alone.
Each module defines ``serve(spec) -> ServerHandle`` and
``drive(spec, endpoint) -> Outcome`` for the kinds listed here.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..spec import KINDS, Kind


@dataclass(frozen=True)
class SystemInfo:
    """A system's name in the table, its module in this package, what it runs."""

    name: str
    module: str
    kinds: tuple[Kind, ...]
    how: str
    asyncio: bool = False
    """Both sides asyncio programs: compared with asyncio streams as well."""


SYSTEMS: tuple[SystemInfo, ...] = (
    SystemInfo("gofast", "gofast_sys", KINDS, "this package, sync API, default settings"),
    SystemInfo(
        "gofast batch",
        "gofast_batch_sys",
        ("oneway", "request16", "bulk"),
        "this package's batch API: post_many 1,000 per call into a subscribe_batch handler; "
        "request_many 16 per call from one thread",
    ),
    SystemInfo(
        "gofast unix",
        "gofast_unix_sys",
        ("oneway", "request", "request16", "bulk"),
        "as gofast, over a Unix domain socket",
    ),
    SystemInfo(
        "gofast tls",
        "gofast_tls_sys",
        ("oneway", "request", "bulk"),
        "as gofast, over TLS 1.3 (rustls), the server's certificate verified",
    ),
    SystemInfo(
        "grpcio",
        "grpc_sys",
        KINDS,
        "sync server, ThreadPoolExecutor(16); client-streaming one-way, unary requests, "
        "server-streaming stream; bytes, no codegen",
    ),
    SystemInfo(
        "pyzmq",
        "zmq_sys",
        KINDS,
        "PUSH/PULL one-way and stream, REQ/REP sequential, DEALER/ROUTER 16 outstanding",
    ),
    SystemInfo(
        "raw socket",
        "raw_sys",
        ("request", "bulk"),
        "blocking sendall/recv_into, echo thread: the loopback limit",
    ),
    # The asyncio group, last and together: each side an asyncio program.
    SystemInfo(
        "gofast aio",
        "gofast_aio_sys",
        KINDS,
        "gofast.aio on asyncio: awaited posts/requests, 16 tasks, async-generator stream",
        asyncio=True,
    ),
    SystemInfo(
        "asyncio",
        "asyncio_sys",
        KINDS,
        "asyncio streams, 4-byte length-prefixed frames; 16 tasks pipelining ids",
        asyncio=True,
    ),
    SystemInfo(
        "grpc.aio",
        "grpc_aio_sys",
        KINDS,
        "grpcio's asyncio API, the grpcio service: client-streaming one-way, unary requests "
        "(16 tasks, one channel), server-streaming stream",
        asyncio=True,
    ),
    SystemInfo(
        "zmq.asyncio",
        "zmq_aio_sys",
        KINDS,
        "pyzmq's asyncio API: PUSH/PULL one-way and stream, DEALER/ROUTER requests "
        "(16 tasks on one DEALER)",
        asyncio=True,
    ),
)

GO_REFERENCE = "n/a (reference not obtainable)"
"""The Go reference row: its module is refused by the Go module proxy (403), so
it cannot be built here, and no number is shown for it."""


def by_name(names: str | None) -> list[SystemInfo]:
    """The systems named in a comma-separated list, by name or by module
    ("zmq" for pyzmq, "raw" for the raw socket, "grpc_aio" for grpc.aio); all
    when None."""
    if not names:
        return list(SYSTEMS)
    wanted = set(names.split(","))
    known = {s.name for s in SYSTEMS} | {s.module.removesuffix("_sys") for s in SYSTEMS}
    unknown = sorted(wanted - known)
    if unknown:
        raise SystemExit(f"unknown system(s): {', '.join(unknown)}; known: {', '.join(known)}")
    return [s for s in SYSTEMS if s.name in wanted or s.module.removesuffix("_sys") in wanted]
