"""The reference's statistics endpoints, and ``/metrics`` for Prometheus.

:func:`serve_stats` runs a small threaded HTTP server (the standard
library's) on its own thread, serving what the Go reference's ``http``
package mounts, with the same shapes, so that dashboards built for Go
services read ours:

``/gofast/transports``
    a JSON array of the live transports' names (sorted, each once).
``/gofast/statistics``
    a flat JSON object of the counters summed over the live transports,
    plus ``timestamp`` (Unix nanoseconds). ``?name=X`` sums only the
    transports named X (an unknown name is an HTTP 500 with the body
    ``invalid name "X"``); ``?keys=a,b`` keeps those counters (an unknown
    key reads 0, as in the reference).
``/metrics``
    the same counters in the Prometheus text format, labelled by transport
    name (needs the ``prometheus`` extra; without it, a 501 that says so).

A transport is live from its creation until it is closed (as the reference
drops a transport from its registry on close).
"""

from __future__ import annotations

import functools
import json
import socket
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import parse_qs, urlsplit

from . import _native

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

__all__ = ["StatsServer", "serve_stats", "statistics", "transport_names"]


def transport_names() -> list[str]:
    """The names of the live transports, sorted, each once."""
    return _native.transport_names()


def statistics(name: str | None = None, keys: list[str] | None = None) -> dict[str, int]:
    """What ``/gofast/statistics`` returns: counters summed over the live
    transports (or those named ``name``), only ``keys`` if given, plus
    ``timestamp``. Raises KeyError for a name no live transport has."""
    if name is not None and name not in _native.transport_names():
        raise KeyError(name)
    counters = _native.stats(name)
    if keys:
        counters = {k: counters.get(k, 0) for k in keys}
    counters["timestamp"] = time.time_ns()
    return counters


@functools.cache
def _server_class() -> Callable[[tuple[str, int], int], ThreadingHTTPServer]:
    # http.server costs ~25 ms to import: only a process that serves pays it.
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class _Handler(BaseHTTPRequestHandler):
        server_version = "gofast-stats"

        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            if url.path == "/gofast/transports":
                self._json(transport_names())
            elif url.path == "/gofast/statistics":
                name = query.get("name", [None])[0]
                keys = [k for k in query.get("keys", [""])[0].strip().split(",") if k]
                try:
                    self._json(statistics(name, keys))
                except KeyError:
                    # The reference's shape: a 500 whose body is Go's %q of the name.
                    self._send(
                        HTTPStatus.INTERNAL_SERVER_ERROR,
                        f"invalid name {json.dumps(name, ensure_ascii=False)}\n".encode(),
                        "text/plain; charset=utf-8",
                    )
            elif url.path == "/metrics":
                self._metrics()
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

        def _metrics(self) -> None:
            try:
                from prometheus_client import CollectorRegistry, generate_latest
                from prometheus_client.exposition import CONTENT_TYPE_LATEST
            except ImportError:
                body = b"/metrics needs prometheus-client: pip install 'gofast[prometheus]'\n"
                self._send(HTTPStatus.NOT_IMPLEMENTED, body, "text/plain; charset=utf-8")
                return
            from .prometheus import GofastCollector

            registry = CollectorRegistry(auto_describe=False)
            registry.register(GofastCollector())
            self._send(HTTPStatus.OK, generate_latest(registry), CONTENT_TYPE_LATEST)

        def _json(self, value: Any) -> None:
            self._send(HTTPStatus.OK, json.dumps(value).encode() + b"\n", "application/json")

        def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            # Scrapes every few seconds would flood stderr; requests are not news.
            pass

    class _Server(ThreadingHTTPServer):
        daemon_threads = True

        def __init__(self, address: tuple[str, int], family: int) -> None:
            self.address_family = family
            super().__init__(address, _Handler)

    return _Server


class StatsServer:
    """A running stats HTTP server; :meth:`close` (or ``with``) stops it."""

    def __init__(self, address: tuple[str, int]) -> None:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._server = _server_class()(address, family)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="gofast-stats-http", daemon=True
        )
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) it listens on (the real port when 0 was asked)."""
        host, port = self._server.socket.getsockname()[:2]
        return host, port

    @property
    def url(self) -> str:
        """``http://host:port`` (IPv6 hosts in brackets)."""
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def close(self) -> None:
        """Stops serving and waits for the server thread."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_stats(address: tuple[str, int] = ("127.0.0.1", 0)) -> StatsServer:
    """Serves ``/gofast/transports``, ``/gofast/statistics`` and ``/metrics``
    on ``address`` (``(host, port)``; port 0 picks one) from a background
    thread. Returns the running :class:`StatsServer`."""
    return StatsServer(address)
