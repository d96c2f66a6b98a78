"""grpcio with generic handlers on raw bytes: no .proto, no generated code.

With no (de)serializers grpcio passes request and response bytes through, so
the payload on the wire is the same bytes as for the other systems (plus HTTP/2
and gRPC framing). The server is grpcio's sync server on a ThreadPoolExecutor
of 16 workers, enough for the 16 concurrent requesters to be served at once.

one-way, bulk  one client-streaming call carrying n messages; its single
               response is the server's count
request        unary calls, one at a time
request16      unary calls from 16 threads sharing one channel
stream         one server-streaming call yielding n messages
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc  # type: ignore[import-untyped]

from ..spec import Endpoint, Outcome, ServerHandle, Spec
from ._common import check_count, check_reply, keep_alive, threaded_requests, timed_requests

SERVICE = "compare.Bench"
MAX_MESSAGE = 16 * 1024 * 1024
OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
]


def serve(spec: Spec) -> ServerHandle:
    count = [0]
    payload = spec.payload()

    def echo(request: bytes, _ctx: Any) -> bytes:
        return request

    def sink(requests: Iterator[bytes], _ctx: Any) -> bytes:
        for _ in requests:
            count[0] += 1
        return str(count[0]).encode()

    def source(request: bytes, _ctx: Any) -> Iterator[bytes]:
        for _ in range(int(request)):
            yield payload

    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Sink": grpc.stream_unary_rpc_method_handler(sink),
        "Source": grpc.unary_stream_rpc_method_handler(source),
    }
    server = grpc.server(ThreadPoolExecutor(max_workers=16), options=OPTIONS)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    keep_alive(server)
    return ServerHandle({"port": port}, lambda: count[0])


def drive(spec: Spec, endpoint: Endpoint) -> Outcome:
    channel = grpc.insecure_channel(f"127.0.0.1:{endpoint['port']}", options=OPTIONS)
    grpc.channel_ready_future(channel).result(timeout=30)
    payload = spec.payload()
    if spec.kind in ("oneway", "bulk"):
        sink = channel.stream_unary(f"/{SERVICE}/Sink")
        start = time.perf_counter()
        got = int(sink(itertools.repeat(payload, spec.n)))
        seconds = time.perf_counter() - start
        check_count("server received", got, spec.n)
        return Outcome(got, seconds)
    if spec.kind == "stream":
        source = channel.unary_stream(f"/{SERVICE}/Source")
        received = 0
        start = time.perf_counter()
        for _ in source(str(spec.n).encode()):
            received += 1
        seconds = time.perf_counter() - start
        check_count("client received", received, spec.n)
        return Outcome(received, seconds)
    echo = channel.unary_unary(f"/{SERVICE}/Echo")

    def one() -> None:
        check_reply(echo(payload), spec.size)

    timed_requests(spec.warmup, one)
    if spec.kind == "request":
        start = time.perf_counter()
        lat = timed_requests(spec.n, one)
        return Outcome(spec.n, time.perf_counter() - start, lat)
    return threaded_requests(spec.n, spec.concurrency, one)
