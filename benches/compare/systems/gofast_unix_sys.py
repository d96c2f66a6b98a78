"""gofast for Python as ``gofast_sys``, over a Unix domain socket (in a temporary directory)."""

from __future__ import annotations

from ..spec import Endpoint, Outcome, ServerHandle, Spec
from . import gofast_sys


def serve(spec: Spec) -> ServerHandle:
    return gofast_sys.serve(spec, link="unix")


def drive(spec: Spec, endpoint: Endpoint) -> Outcome:
    return gofast_sys.drive(spec, endpoint)
