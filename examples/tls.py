"""gofast over TLS (rustls, inside the package): the server proves who it is
with its certificate, the client checks it against the CA it trusts and the
name it dialed. The gofast bytes inside TLS are those of a plain connection.
It prints::

    server listening on 127.0.0.1:PORT with TLS
    client: TLS handshake done, server certificate O=...
    client: 're: hello' over TLS
    a client that trusts another CA: TLSError

Without ``--cert``/``--key``/``--ca`` it makes a throwaway CA and a
certificate for 127.0.0.1 with trustme (``pip install trustme``). Run it
with ``python examples/tls.py``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import gofast


@dataclass
class Greeting(gofast.CborMessage, id=100):
    text: str


def throwaway_pems() -> tuple[bytes, bytes, bytes]:
    """(certificate chain, key, CA) for 127.0.0.1, from a new test CA."""
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    return leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes(), ca.cert_pem.bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cert", help="the server's certificate chain (PEM file)")
    parser.add_argument("--key", help="the server's private key (PEM file)")
    parser.add_argument("--ca", help="the CA the client trusts (PEM file)")
    args = parser.parse_args()
    if args.cert and args.key and args.ca:
        cert, key, ca = args.cert, args.key, args.ca  # file paths work as they are
    else:
        cert, key, ca = throwaway_pems()

    server = gofast.Server(("127.0.0.1", 0), name="tls-server", tls=gofast.TLS(cert=cert, key=key))
    server.subscribe(Greeting, lambda stream, msg: Greeting("re: " + msg.decode(Greeting).text))
    with server:
        address = server.address
        assert not isinstance(address, str)  # (host, port): TCP
        host, port = address
        print(f"server listening on {host}:{port} with TLS")
        # The server's certificate must name what the client dialed (127.0.0.1).
        with gofast.Transport.connect(server.address, tls=gofast.TLS(ca=ca)) as client:
            client.handshake()  # TLS first, then gofast's whoami
            print(f"client: TLS handshake done, server certificate {client.peer_subject}")
            print(f"client: {client.request(Greeting('hello'), Greeting).text!r} over TLS")
        stranger = gofast.TLS(ca=throwaway_pems()[2])
        with gofast.Transport.connect(server.address, tls=stranger) as doubter:
            try:
                doubter.handshake()
            except gofast.TLSError as e:
                print(f"a client that trusts another CA: {type(e).__name__}")


if __name__ == "__main__":
    main()
