"""Forks while a transport pair is up (tests/test_fork.py runs it).

The child uses the inherited transports (each call must raise UsageError),
closes them and exits through sys.exit, so atexit handlers run; it also
makes a transport pair of its own, which must work. The parent then checks
that its connection survived all that. Prints one JSON object. An argument
is the setting ``reader`` of every transport ("thread", the default, or
"shared": the child then starts a shared reader of its own)."""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any

import gofast
from gofast import BinMessage

SETTINGS = {"reader": sys.argv[1] if len(sys.argv) > 1 else "thread"}


def pair(name: str) -> tuple[gofast.Transport, gofast.Transport]:
    with gofast.listen(("127.0.0.1", 0)) as lis:
        client = gofast.Transport.connect(lis.address, name=f"{name}-client", settings=SETTINGS)
        server = lis.accept(name=f"{name}-server", settings=SETTINGS, timeout=10.0)
    server.subscribe(100, lambda stream, msg: stream.respond(msg))
    done = threading.Thread(target=server.handshake, args=(10.0,))
    done.start()
    client.handshake(10.0)
    done.join()
    return client, server


def child(client: gofast.Transport, server: gofast.Transport, stream: Any) -> None:
    refused = []
    calls = {
        "post": lambda: client.post(BinMessage(100, b"x")),
        "request": lambda: client.request(BinMessage(100, b"x"), timeout=1.0),
        "stream": lambda: client.stream(BinMessage(100, b"x")),
        "ping": lambda: client.ping("x"),
        "flush": lambda: client.flush(),
        "subscribe": lambda: client.subscribe(101, lambda s, m: None),
        "stream.send": lambda: stream.send(BinMessage(100, b"x")),
        "stream.recv": lambda: stream.recv(timeout=1.0),
    }
    for name, call in calls.items():
        try:
            call()
        except gofast.UsageError as e:
            if "parent process" in str(e):
                refused.append(name)
    client.close()
    server.close()
    own_client, own_server = pair("child")
    own_ok = own_client.request(BinMessage(100, b"mine"), timeout=10.0).data == b"mine"
    own_client.close()
    own_server.close()
    ok = sorted(refused) == sorted(calls) and own_ok
    print(json.dumps({"child_refused": sorted(refused), "child_own_pair": own_ok}), flush=True)
    sys.exit(0 if ok else 3)  # atexit handlers run: they must leave the parent's alone


def main() -> None:
    client, server = pair("parent")
    stream = client.stream(BinMessage(100, b"open"))
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        child(client, server, stream)
    _, status = os.waitpid(pid, 0)
    reply = client.request(BinMessage(100, b"after fork"), timeout=10.0)
    print(
        json.dumps(
            {
                "child_exit": os.waitstatus_to_exitcode(status),
                "parent_reply": bytes(reply.data).decode(),
                "parent_open": not client.closed and not server.closed,
            }
        ),
        flush=True,
    )
    client.close()
    server.close()


if __name__ == "__main__":
    main()
