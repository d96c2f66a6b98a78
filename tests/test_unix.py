"""Unix domain sockets: an address that is a ``str`` or path-like is a
socket path, for connect, listen, Server and from_socket (the exchanges
themselves run over Unix sockets in every pair test: conftest's ``link``)."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

import gofast
from conftest import echo
from gofast import BinMessage


def serve_one(lis: gofast.Listener, out: list[gofast.Transport]) -> threading.Thread:
    def run() -> None:
        t = lis.accept(name="unix-server", timeout=10)
        t.subscribe(100, echo)
        t.handshake(10)
        out.append(t)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_connect_and_listen_on_a_path(tmp_path: Path) -> None:
    path = tmp_path / "svc.sock"
    served: list[gofast.Transport] = []
    with gofast.listen(path) as lis:  # a path-like
        assert lis.address == str(path)
        thread = serve_one(lis, served)
        with gofast.Transport.connect(str(path), name="unix-client") as client:
            client.handshake(10)
            thread.join(10)
            [server] = served
            assert client.request(BinMessage(100, b"over unix")).data == b"over unix"
            assert client.peer_address == str(path)
            assert server.local_address == str(path)
            # The dialing end of a Unix socket has no name, as in Python's socket.
            assert client.local_address == "" and server.peer_address == ""
            assert not client.tls
            server.close()
    assert not path.exists()  # the listener removes its socket file


def test_a_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    path = str(tmp_path / "stale.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)
    dead.close()  # the file stays, as after a crashed server
    assert os.path.exists(path)
    with gofast.listen(path) as lis:
        served: list[gofast.Transport] = []
        thread = serve_one(lis, served)
        with gofast.Transport.connect(path) as client:
            client.handshake(10)
            thread.join(10)
            assert client.request(BinMessage(100, b"x")).data == b"x"
        served[0].close()


def test_a_file_that_is_no_socket_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("precious")
    with pytest.raises(OSError):
        gofast.listen(path)
    assert path.read_text() == "precious"


def test_connecting_to_no_listener_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        gofast.Transport.connect(tmp_path / "nobody.sock")


def test_from_socket_takes_a_unix_socketpair() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    client = gofast.Transport.from_socket(a, name="pair-a", dialed=True)
    server = gofast.Transport.from_socket(b, name="pair-b", dialed=False)
    server.subscribe(100, echo)
    try:
        done = threading.Thread(target=server.handshake, args=(10,))
        done.start()
        client.handshake(10)
        done.join(10)
        assert client.request(BinMessage(100, b"socketpair")).data == b"socketpair"
    finally:
        client.close()
        server.close()


def test_from_socket_refuses_a_datagram_socket() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        with pytest.raises(ValueError, match="SOCK_STREAM"):
            gofast.Transport.from_socket(a)
    finally:
        a.close()
        b.close()


def test_a_server_on_a_path(tmp_path: Path) -> None:
    path = str(tmp_path / "server.sock")
    server = gofast.Server(path, name="unix-srv")
    server.subscribe(100, echo)
    with server:
        assert server.address == path
        assert path in repr(server)
        with gofast.Transport.connect(path) as client:
            client.handshake(10)
            assert client.request(BinMessage(100, b"served")).data == b"served"
    assert not os.path.exists(path)
    assert path in repr(server)  # still tells where it was
