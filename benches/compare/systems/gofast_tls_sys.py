"""gofast for Python as ``gofast_sys``, over TLS 1.3 (rustls): a trustme CA,
the server's certificate verified, no client certificate."""

from __future__ import annotations

from ..spec import Endpoint, Outcome, ServerHandle, Spec
from . import gofast_sys


def serve(spec: Spec) -> ServerHandle:
    return gofast_sys.serve(spec, link="tls")


def drive(spec: Spec, endpoint: Endpoint) -> Outcome:
    return gofast_sys.drive(spec, endpoint)
