"""A tiny key-value service on gofast.Server, and a few clients using it.

The server subscribes its handlers once (``Put`` is a POST, ``Get`` a
REQUEST) and serves every connection with them; it counts connections
through its ``on_connect`` / ``on_disconnect`` hooks. Three clients, each
on its own thread and connection, store keys and read back their own and
each other's. Then the server stops gracefully and prints its summed
counters::

    client-0: stored 100 keys, read 100 back, read client-2's key-99: 'v2-99'
    server: 3 clients connected, 300 puts, 303 gets, 0 refused

Run: ``python examples/kv_server.py``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import gofast

N_CLIENTS = 3
N_KEYS = 100


@dataclass
class Put(gofast.CborMessage, id=600):
    key: str
    value: str


@dataclass
class Get(gofast.CborMessage, id=601):
    key: str


@dataclass
class Value(gofast.CborMessage, id=602):
    value: str | None


class Store:
    """The data, shared by every connection's handlers (on gofast's threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data: dict[str, str] = {}
        self.connected = 0
        self.gets = 0

    def on_put(self, stream: gofast.Stream | None, msg: gofast.BinMessage) -> None:
        put = msg.decode(Put)
        with self.lock:
            self.data[put.key] = put.value

    def on_get(self, stream: gofast.Stream | None, msg: gofast.BinMessage) -> None:
        if stream is None:
            return
        with self.lock:
            value = self.data.get(msg.decode(Get).key)
            self.gets += 1
        stream.respond(Value(value))

    def on_connect(self, transport: gofast.Transport) -> None:
        with self.lock:
            self.connected += 1


def client(address: tuple[str, int], n: int, stored: threading.Barrier, out: list[str]) -> None:
    with gofast.Transport.connect(address, name=f"client-{n}") as t:
        t.handshake()
        for i in range(N_KEYS):
            t.post(Put(f"c{n}-key-{i}", f"v{n}-{i}"))
        t.flush()
        # A POST has no reply: a REQUEST behind it on the same connection
        # is handled after it, so reading the last key confirms them all.
        read = sum(
            t.request(Get(f"c{n}-key-{i}"), Value).value == f"v{n}-{i}" for i in range(N_KEYS)
        )
        stored.wait(30)  # every client has stored its keys
        other = (n + N_CLIENTS - 1) % N_CLIENTS
        theirs = t.request(Get(f"c{other}-key-{N_KEYS - 1}"), Value).value
        out.append(
            f"client-{n}: stored {N_KEYS} keys, read {read} back, "
            f"read client-{other}'s key-{N_KEYS - 1}: {theirs!r}"
        )


def main() -> None:
    store = Store()
    server = gofast.Server(("127.0.0.1", 0), name="kv", on_connect=store.on_connect)
    server.subscribe(Put, store.on_put).subscribe(Get, store.on_get)
    with server:
        stored = threading.Barrier(N_CLIENTS)
        lines: list[str] = []
        threads = [
            threading.Thread(target=client, args=(server.address, n, stored, lines))
            for n in range(N_CLIENTS)
        ]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        server.stop(grace=1.0)
    for line in sorted(lines):
        print(line)
    st = server.stats()
    print(
        f"server: {store.connected} clients connected, {st['n_rxpost']} puts, "
        f"{store.gets} gets, {st['n_refused']} refused"
    )


if __name__ == "__main__":
    main()
