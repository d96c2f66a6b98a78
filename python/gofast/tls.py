"""TLS for gofast connections: :class:`TLS` holds what one side needs
(certificates, keys, the CAs it trusts), for ``connect(..., tls=)``,
``listen(..., tls=)`` and ``Server(..., tls=)``. The TLS itself is rustls,
in the Rust core; the gofast bytes inside it are those of a plain
connection, so a Go peer over ``tls.Conn`` reads them as usual."""

from __future__ import annotations

import os
from typing import Literal, TypeAlias

from . import _native

__all__ = ["TLS", "PEM"]

PEM: TypeAlias = "bytes | str | os.PathLike[str]"
"""PEM data as ``bytes``, or the path of a PEM file (``str`` or a path)."""

ClientAuth = Literal["none", "optional", "required"]


def _read_pem(what: str, value: bytes | str | os.PathLike[str] | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, (str, os.PathLike)):
        with open(value, "rb") as f:
            return f.read()
    raise TypeError(f"{what}: PEM bytes or a file path, not {type(value).__name__}")


class TLS:
    """TLS settings for one side of a connection.

    * ``cert``, ``key``: this side's certificate chain and private key (PEM);
      a server needs them, a client gives them for mutual TLS.
    * ``ca``: the CAs that sign the peer's certificate (PEM); a client
      verifies the server against them (and/or ``system_roots=True``, the
      system's store), a server its clients'.
    * ``client_auth`` (server side): ``"required"`` (the default when ``ca``
      is given: mutual TLS), ``"optional"``, or ``"none"`` (the default
      without ``ca``).
    * ``server_name`` (client side): the name the server's certificate must
      carry; by default the host of the address dialed (needed for a Unix
      socket path).

    PEM arguments are ``bytes`` or file paths; files are read here, once.
    Bad PEM, or a key without a certificate, raises
    :class:`~gofast.SettingsError`. Failures of the handshake itself (an
    untrusted or expired certificate, a wrong name, a missing client
    certificate, a plaintext peer) raise :class:`~gofast.TLSError` from
    ``handshake()``.
    """

    def __init__(
        self,
        *,
        cert: bytes | str | os.PathLike[str] | None = None,
        key: bytes | str | os.PathLike[str] | None = None,
        ca: bytes | str | os.PathLike[str] | None = None,
        system_roots: bool = False,
        client_auth: ClientAuth | None = None,
        server_name: str | None = None,
    ) -> None:
        ca_pem = _read_pem("ca", ca)
        if client_auth is None:
            client_auth = "required" if ca_pem is not None else "none"
        self.client_auth: ClientAuth = client_auth
        self.server_name = server_name
        self._native = _native.TlsConfig(
            _read_pem("cert", cert), _read_pem("key", key), ca_pem, system_roots, client_auth
        )

    def __repr__(self) -> str:
        cert = "with certificate" if self._native.has_certificate else "no certificate"
        return f"<gofast.TLS {cert}, client_auth={self.client_auth!r}>"
