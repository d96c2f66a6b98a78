"""A gofast service on a Unix domain socket: an address that is a ``str``
or a path is a socket path, for ``listen``, ``Server`` and ``connect``
(no TCP, no ports; the socket file's permissions decide who may connect).
It prints::

    server listening on /tmp/.../kv.sock
    client: put 3 keys, got 'three' back over the Unix socket
    client's view of the server: /tmp/.../kv.sock

Run it with ``python examples/unix_socket.py`` (``--path`` to pick the file).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import dataclass

import gofast


@dataclass
class Put(gofast.CborMessage, id=300):
    key: str
    value: str


@dataclass
class Get(gofast.CborMessage, id=301):
    key: str


@dataclass
class Value(gofast.CborMessage, id=302):
    value: str | None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = os.path.join(tempfile.mkdtemp(prefix="gofast-"), "kv.sock")
    parser.add_argument("--path", default=default, help="the socket file")
    path = parser.parse_args().path

    store: dict[str, str] = {}

    def on_put(stream: gofast.Stream | None, msg: gofast.BinMessage) -> None:
        put = msg.decode(Put)
        store[put.key] = put.value

    def on_get(stream: gofast.Stream | None, msg: gofast.BinMessage) -> Value:
        return Value(store.get(msg.decode(Get).key))  # a returned message is the reply

    server = gofast.Server(path, name="kv-unix")
    server.subscribe(Put, on_put).subscribe(Get, on_get)
    with server:  # starts; stops (and removes the socket file) at the end
        print(f"server listening on {server.address}")
        with gofast.Transport.connect(path, name="kv-client") as client:
            client.handshake()
            for key, value in (("1", "one"), ("2", "two"), ("3", "three")):
                client.post(Put(key, value))
            reply = client.request(Get("3"), Value)  # after the posts, on one connection
            print(f"client: put 3 keys, got {reply.value!r} back over the Unix socket")
            print(f"client's view of the server: {client.peer_address}")


if __name__ == "__main__":
    main()
