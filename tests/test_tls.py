"""TLS (rustls in the core): mutual TLS and the peer's identity, each way a
TLS handshake fails (a typed TLSError on the side that can know, within the
handshake timeout, and a server that keeps serving others), configuration
errors, and what from_socket refuses."""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import trustme

import gofast
from conftest import Certificates, echo
from gofast import BinMessage


class Outcome:
    """What each side's handshake() did."""

    def __init__(self, server: BaseException | None, client: BaseException | None) -> None:
        self.server = server
        self.client = client


def handshake_both(
    server_tls: gofast.TLS | None,
    client_tls: gofast.TLS | None,
    address: Any = ("127.0.0.1", 0),
    timeout: float = 5.0,
) -> tuple[Outcome, gofast.Transport, gofast.Transport]:
    """Connects a client to a fresh listener and runs both handshakes."""
    with gofast.listen(address, tls=server_tls) as lis:
        with ThreadPoolExecutor(1) as pool:
            accepted = pool.submit(lis.accept, name="tls-server", timeout=10)
            client = gofast.Transport.connect(lis.address, name="tls-client", tls=client_tls)
            server = accepted.result(timeout=10)
    server.subscribe(100, echo)

    def run(t: gofast.Transport) -> BaseException | None:
        try:
            t.handshake(timeout)
        except gofast.GofastError as e:
            return e
        return None

    with ThreadPoolExecutor(1) as pool:
        theirs = pool.submit(run, server)
        mine = run(client)
        return Outcome(theirs.result(timeout=30), mine), server, client


@pytest.fixture
def closing() -> Iterator[list[gofast.Transport]]:
    made: list[gofast.Transport] = []
    yield made
    for t in made:
        t.close()


def both(
    closing: list[gofast.Transport], server_tls: gofast.TLS | None, client_tls: gofast.TLS | None
) -> Outcome:
    outcome, server, client = handshake_both(server_tls, client_tls)
    closing += [server, client]
    return outcome


def test_mutual_tls_carries_every_exchange_and_names_the_peers(
    certs: Certificates, closing: list[gofast.Transport]
) -> None:
    outcome, server, client = handshake_both(certs.server(), certs.client())
    closing += [server, client]
    assert (outcome.server, outcome.client) == (None, None)
    assert server.tls and client.tls
    assert server.peer_subject is not None and "CN=client" in server.peer_subject
    assert client.peer_subject is not None and "CN=server" in client.peer_subject
    assert server.peer_certificate == certs.client_cert.cert_chain_pems[0].bytes() or (
        server.peer_certificate is not None and len(server.peer_certificate) > 100
    )
    assert client.request(BinMessage(100, b"small")).data == b"small"
    bulk = os.urandom(1_000_000)  # many TLS records each way
    assert client.request(BinMessage(100, bulk)).data == bulk
    assert client.ping("over tls") == "over tls"


def test_the_peer_certificate_is_its_der(
    certs: Certificates, closing: list[gofast.Transport]
) -> None:
    outcome, server, client = handshake_both(certs.server(), certs.client())
    closing += [server, client]
    assert outcome.client is None
    der = ssl.PEM_cert_to_DER_cert(certs.client_cert.cert_chain_pems[0].bytes().decode())
    assert server.peer_certificate == der


def test_without_client_auth_the_server_knows_no_peer_certificate(
    certs: Certificates, closing: list[gofast.Transport]
) -> None:
    outcome = both(closing, certs.server(client_auth="none"), certs.tls(None))
    assert (outcome.server, outcome.client) == (None, None)
    server, client = closing
    assert server.peer_subject is None and server.peer_certificate is None
    assert client.peer_subject is not None
    assert client.request(BinMessage(100, b"x")).data == b"x"


def test_optional_client_auth_takes_clients_with_and_without(
    certs: Certificates, closing: list[gofast.Transport]
) -> None:
    anonymous = both(closing, certs.server(client_auth="optional"), certs.tls(None))
    named = both(closing, certs.server(client_auth="optional"), certs.client())
    assert (anonymous.server, anonymous.client, named.server, named.client) == (None,) * 4
    assert closing[0].peer_subject is None
    assert closing[2].peer_subject is not None and "CN=client" in closing[2].peer_subject


def test_a_client_that_does_not_trust_the_servers_ca(
    certs: Certificates, closing: list[gofast.Transport]
) -> None:
    stranger = trustme.CA()
    outcome = both(closing, certs.server(), certs.client() and _trusting(stranger, certs))
    assert isinstance(outcome.client, gofast.TLSError)
    assert "not signed by a CA in ca=" in str(outcome.client)
    assert isinstance(outcome.server, gofast.TLSError)
    assert "does not trust our certificate" in str(outcome.server)


def _trusting(ca: trustme.CA, certs: Certificates) -> gofast.TLS:
    """The client's certificate, trusting only ``ca``."""
    leaf = certs.client_cert
    return gofast.TLS(
        cert=leaf.cert_chain_pems[0].bytes(),
        key=leaf.private_key_pem.bytes(),
        ca=ca.cert_pem.bytes(),
        server_name="localhost",
    )


def test_a_client_without_the_required_certificate(
    certs: Certificates, closing: list[gofast.Transport]
) -> None:
    outcome = both(closing, certs.server(), certs.tls(None, server_name="localhost"))
    assert isinstance(outcome.server, gofast.TLSError)
    assert "requires a client certificate" in str(outcome.server)
    # TLS 1.3: the client learns after its own handshake, from the alert.
    assert isinstance(outcome.client, gofast.TLSError)
    assert "requires a client certificate" in str(outcome.client)


def test_a_server_certificate_for_another_name(
    certs: Certificates, closing: list[gofast.Transport]
) -> None:
    outcome = both(closing, certs.server(), certs.client(server_name="elsewhere.test"))
    assert isinstance(outcome.client, gofast.TLSError)
    assert "does not name the server_name" in str(outcome.client)
    assert isinstance(outcome.server, gofast.TLSError)


def test_an_expired_server_certificate(
    certs: Certificates, closing: list[gofast.Transport]
) -> None:
    old = certs.ca.issue_cert(
        "localhost",
        not_before=datetime.datetime(2020, 1, 1),
        not_after=datetime.datetime(2021, 1, 1),
    )
    outcome = both(closing, certs.tls(old, client_auth="none"), certs.client())
    assert isinstance(outcome.client, gofast.TLSError)
    assert "expired" in str(outcome.client)
    assert isinstance(outcome.server, gofast.TLSError)
    assert "expired" in str(outcome.server)


def test_a_plaintext_client_against_a_tls_server(
    certs: Certificates, closing: list[gofast.Transport]
) -> None:
    outcome = both(closing, certs.server(), None)
    assert isinstance(outcome.server, gofast.TLSError)
    assert "plaintext gofast frames" in str(outcome.server)
    # The client reads the server's TLS alert where a frame should be.
    assert isinstance(outcome.client, (gofast.ProtocolError, gofast.ConnectionClosed))


def test_a_tls_client_against_a_plaintext_server(
    certs: Certificates, closing: list[gofast.Transport]
) -> None:
    outcome = both(closing, None, certs.client())
    # A ProtocolError, or the close it caused if that came first: either
    # way the reason says what happened.
    assert isinstance(outcome.server, (gofast.ProtocolError, gofast.ConnectionClosed))
    assert "the peer speaks TLS" in str(outcome.server)
    assert isinstance(outcome.client, gofast.TLSError)


def test_a_peer_that_never_says_hello_times_out(certs: Certificates) -> None:
    with gofast.listen(("127.0.0.1", 0), tls=certs.server()) as lis:
        host, port = lis.address  # type: ignore[misc]
        silent = socket.create_connection((host, port))
        try:
            server = lis.accept(timeout=10)
            with pytest.raises(gofast.TLSError, match="not done within 0.300s"):
                server.handshake(0.3)
            assert server.closed
        finally:
            silent.close()


def test_a_server_keeps_serving_after_failed_tls_handshakes(certs: Certificates) -> None:
    server = gofast.Server(
        ("127.0.0.1", 0), tls=certs.server(), handshake_timeout=5, sweep_interval=0.02
    )
    server.subscribe(100, echo)
    with server:
        bad = [None, certs.tls(None, server_name="localhost"), _trusting(trustme.CA(), certs)]
        for tls in bad:
            t = gofast.Transport.connect(server.address, tls=tls)
            with pytest.raises((gofast.TLSError, gofast.ProtocolError, gofast.ConnectionClosed)):
                t.handshake(5)
                t.request(BinMessage(100, b"never"), timeout=5)
            t.close()
        with gofast.Transport.connect(server.address, tls=certs.client()) as good:
            good.handshake(5)
            assert good.request(BinMessage(100, b"served")).data == b"served"
        assert server.stats()["n_handshake_failed"] >= 2


def test_tls_over_a_unix_socket_needs_and_checks_a_server_name(certs: Certificates) -> None:
    path = os.path.join(tempfile.mkdtemp(prefix="gofast-"), "tls.sock")
    with gofast.listen(path, tls=certs.server()) as lis:
        nameless = certs.tls(certs.client_cert)  # no server_name, and a path names no host
        with pytest.raises(gofast.UsageError, match="server_name"):
            gofast.Transport.connect(lis.address, tls=nameless)
        outcome, server, client = handshake_both(certs.server(), certs.client(), address=path + "2")
        try:
            assert (outcome.server, outcome.client) == (None, None)
            assert client.request(BinMessage(100, b"unix+tls")).data == b"unix+tls"
        finally:
            client.close()
            server.close()


def test_closing_ends_tls_cleanly_for_the_peer(
    certs: Certificates, closing: list[gofast.Transport]
) -> None:
    outcome, server, client = handshake_both(certs.server(), certs.client())
    closing += [server, client]
    assert outcome.client is None
    client.close()
    with pytest.raises(gofast.ConnectionClosed):
        server.request(BinMessage(100, b"x"), timeout=5)
    # The peer read our close_notify: a clean end, not a broken record.
    assert "peer closed the connection" in _close_reason(server)


def _close_reason(t: gofast.Transport) -> str:
    try:
        t.post(BinMessage(100, b"x"))
    except gofast.ConnectionClosed as e:
        return str(e)
    raise AssertionError("transport still open")


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"cert": b"not pem", "key": b"not pem"}, "cert: no CERTIFICATE"),
        ({"key": None, "cert": "CERT"}, "cert and key go together"),
        ({"ca": b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}, "ca:"),
        ({"client_auth": "sometimes"}, "client_auth"),
        ({"client_auth": "required"}, "client_auth needs ca="),
    ],
)
def test_bad_settings_are_settings_errors(
    certs: Certificates, kwargs: dict[str, Any], words: str
) -> None:
    if kwargs.get("cert") == "CERT":
        kwargs["cert"] = certs.server_cert.cert_chain_pems[0].bytes()
    with pytest.raises(gofast.SettingsError, match=words):
        gofast.TLS(**kwargs)


def test_pem_may_come_from_files(certs: Certificates, tmp_path: Any) -> None:
    cert, key, ca = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem"
    certs.server_cert.cert_chain_pems[0].write_to_path(str(cert))
    certs.server_cert.private_key_pem.write_to_path(str(key))
    certs.ca.cert_pem.write_to_path(str(ca))
    server_tls = gofast.TLS(cert=cert, key=str(key), ca=ca)
    outcome, server, client = handshake_both(server_tls, certs.client())
    try:
        assert (outcome.server, outcome.client) == (None, None)
    finally:
        client.close()
        server.close()


def test_a_client_needs_something_to_verify_the_server_with(certs: Certificates) -> None:
    with gofast.listen(("127.0.0.1", 0), tls=certs.server()) as lis:
        with pytest.raises(gofast.SettingsError, match="ca= or system_roots"):
            gofast.Transport.connect(lis.address, tls=gofast.TLS())


def test_a_server_needs_a_certificate(certs: Certificates) -> None:
    with pytest.raises(gofast.UsageError, match="needs its certificate"):
        gofast.listen(("127.0.0.1", 0), tls=certs.tls(None))


def test_from_socket_refuses_an_ssl_socket(certs: Certificates) -> None:
    with gofast.listen(("127.0.0.1", 0), tls=certs.server()) as lis:
        host, port = lis.address  # type: ignore[misc]
        raw = socket.create_connection((host, port))
        ctx = ssl.create_default_context(cafile=None)
        wrapped = ctx.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False)
        try:
            with pytest.raises(gofast.UsageError, match="tls=gofast.TLS"):
                gofast.Transport.from_socket(wrapped)
            assert wrapped.fileno() >= 0  # refused before anything was detached
        finally:
            wrapped.close()


def test_handshake_reacts_to_interrupts_during_tls(certs: Certificates) -> None:
    """The TLS handshake waits in slices that run the signal check: a
    Python exception raised by a signal handler ends it."""
    import signal

    with gofast.listen(("127.0.0.1", 0), tls=certs.server()) as lis:
        host, port = lis.address  # type: ignore[misc]
        silent = socket.create_connection((host, port))
        server = lis.accept(timeout=10)

        class Stop(Exception):
            pass

        def on_alarm(signum: int, frame: Any) -> None:
            raise Stop

        old = signal.signal(signal.SIGALRM, on_alarm)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.2)
            with pytest.raises(Stop):
                server.handshake(30)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
            silent.close()
            server.close()


def test_tls_transports_share_no_state_across_threads(certs: Certificates) -> None:
    """Many requesters on one TLS connection: every reply reaches its own
    requester (the writer alone sends TLS records, in order)."""
    outcome, server, client = handshake_both(certs.server(), certs.client())
    try:
        assert outcome.client is None
        errors: list[BaseException] = []

        def work(n: int) -> None:
            try:
                for i in range(200):
                    body = f"{n}:{i}".encode() * (1 + i % 50)
                    assert client.request(BinMessage(100, body)).data == body
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors[:3]
    finally:
        client.close()
        server.close()


def test_backpressure_over_tls_blocks_senders_and_loses_nothing(certs: Certificates) -> None:
    """A peer that stops reading: TLS senders (the writer thread, and a
    requester writing its own records) block once pending.max is queued,
    instead of piling up ciphertext; all arrives in order afterwards."""
    size, count = 64 * 1024, 1000  # 64 MiB: far more than socket buffers hold
    release = threading.Event()
    got: list[int] = []

    def on_post(stream: gofast.Stream | None, msg: gofast.BinMessage) -> None:
        release.wait(60)  # the first POST stalls the server's reader
        got.append(int.from_bytes(bytes(msg.data)[:4], "big"))

    outcome, server, client = handshake_both(certs.server(), certs.client())
    try:
        assert outcome.client is None
        server.subscribe(101, on_post)
        posted = [0]

        def poster() -> None:
            for i in range(count):
                client.post(BinMessage(101, i.to_bytes(4, "big") * (size // 4)), flush=True)
                posted[0] += 1

        replies: list[bytes] = []
        sender = threading.Thread(target=poster)
        requester = threading.Thread(
            target=lambda: replies.append(client.request(BinMessage(100, b"late"), timeout=60).data)
        )
        sender.start()
        requester.start()
        sender.join(timeout=2.0)
        assert sender.is_alive(), "64 MiB went through a peer that reads nothing"
        assert posted[0] < count
        release.set()
        sender.join(60)
        requester.join(60)
        assert not sender.is_alive() and replies == [b"late"]
        client.ping("sync", 30)  # after every post on the connection
        assert got == list(range(count))
    finally:
        release.set()
        client.close()
        server.close()
