"""Mutual TLS: the server takes only clients whose certificate its CA
signed, and knows who each one is (``transport.peer_subject``, or the DER
in ``transport.peer_certificate``) — here to answer by name. It prints::

    server requires client certificates: True
    server: a request from O=..., CN=alice
    alice: 'hello, alice'
    a client without a certificate: TLSError (the peer requires a client certificate ...)

Certificates come from a throwaway CA made with trustme (``pip install
trustme``). Run it with ``python examples/mtls.py``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import trustme

import gofast


@dataclass
class Hello(gofast.CborMessage, id=100):
    text: str


def main() -> None:
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1")
    alice = ca.issue_cert("alice.example", common_name="alice")
    ca_pem = ca.cert_pem.bytes()

    def leaf_tls(leaf: trustme.LeafCert) -> gofast.TLS:
        chain = b"".join(p.bytes() for p in leaf.cert_chain_pems)
        return gofast.TLS(cert=chain, key=leaf.private_key_pem.bytes(), ca=ca_pem)

    # ca= on a server means: require client certificates signed by it.
    server_tls = leaf_tls(server_cert)
    print(f"server requires client certificates: {server_tls.client_auth == 'required'}")

    def greeter(t: gofast.Transport) -> gofast.Handler:
        def on_hello(stream: gofast.Stream | None, msg: gofast.BinMessage) -> Hello:
            # Known once the TLS handshake verified the client's certificate.
            subject = t.peer_subject or ""
            print(f"server: a request from {subject}")
            return Hello("hello, " + subject.rpartition("CN=")[2])

        return on_hello

    def serve(listener: gofast.Listener, count: int) -> None:
        for _ in range(count):
            t = listener.accept(name="mtls-server")
            served.append(t)

            t.subscribe(Hello, greeter(t))
            try:
                t.handshake()
            except gofast.TLSError:
                pass  # the client is told (TLS alert); the server goes on

    served: list[gofast.Transport] = []
    with gofast.listen(("127.0.0.1", 0), tls=server_tls) as listener:
        thread = threading.Thread(target=serve, args=(listener, 2))
        thread.start()
        with gofast.Transport.connect(listener.address, tls=leaf_tls(alice)) as client:
            client.handshake()
            print(f"alice: {client.request(Hello('hi'), Hello).text!r}")
        anonymous = gofast.TLS(ca=ca_pem)
        with gofast.Transport.connect(listener.address, tls=anonymous) as nobody:
            try:
                nobody.handshake()
            except gofast.TLSError as e:
                print(f"a client without a certificate: {type(e).__name__} ({e})")
        thread.join()
    for t in served:
        t.close()


if __name__ == "__main__":
    main()
