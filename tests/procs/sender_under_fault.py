"""The process under test for tests/test_peer_death.py: a gofast service
whose peer is SIGKILLed while it sends.

Usage: sender_under_fault.py MODE REPS LOGLEVEL [READER]. For each repetition it
starts tests/procs/dying_peer.py, connects and handshakes, then sends in a
loop from its main thread (MODE ``post``: 512 B POSTs; ``stream``: messages
on a stream it opened; ``respond``: answers to the peer's REQUESTs) while
another thread SIGKILLs the peer after a short random delay. It prints one
JSON line per repetition: how long after the kill the main thread got
ConnectionClosed. At the end it serves a new client in-process (handshake
and a request) and prints ``{"served": true}``. READER is the setting
``reader`` of its transports ("thread", the default, or "shared").
"""

from __future__ import annotations

import json
import logging
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import gofast

PEER = Path(__file__).resolve().with_name("dying_peer.py")
DATA = gofast.BinMessage(100, b"x" * 512)
SETTINGS: dict[str, Any] = {}  # {"reader": READER}, set by main()


def one_round(mode: str) -> dict[str, Any]:
    peer = subprocess.Popen([sys.executable, str(PEER), mode], stdout=subprocess.PIPE, text=True)
    try:
        assert peer.stdout is not None
        port = int(peer.stdout.readline())
        requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        t = gofast.Transport.connect(("127.0.0.1", port), name=f"sender-{mode}", settings=SETTINGS)
        t.subscribe(100, lambda stream, msg: requests.put(stream))
        t.handshake(10.0)
        killed_at: list[float] = []

        def kill() -> None:
            time.sleep(random.uniform(0.0, 0.02))
            killed_at.append(time.monotonic())
            os.kill(peer.pid, signal.SIGKILL)

        killer = threading.Thread(target=kill)
        stream = t.stream(DATA) if mode == "stream" else None
        killer.start()
        sent = 0
        error = ""
        try:
            while True:
                if mode == "post":
                    t.post(DATA)
                elif mode == "stream":
                    assert stream is not None
                    stream.send(DATA)
                else:
                    try:
                        request = requests.get(timeout=0.05)
                    except queue.Empty:
                        t.flush()  # nothing to answer: raises once the connection is gone
                        continue
                    request.respond(DATA)
                sent += 1
        except gofast.ConnectionClosed as e:
            error = type(e).__name__
        got_at = time.monotonic()
        killer.join()
        t.close()
        return {"mode": mode, "sent": sent, "error": error, "after_kill": got_at - killed_at[0]}
    finally:
        peer.kill()
        peer.wait()


def serve_a_new_client() -> bool:
    with gofast.listen(("127.0.0.1", 0)) as lis:
        client = gofast.Transport.connect(lis.address, name="late-client", settings=SETTINGS)
        server = lis.accept(name="late-server", settings=SETTINGS, timeout=10.0)
        server.subscribe(100, lambda stream, msg: stream.respond(msg))
        done = threading.Thread(target=server.handshake, args=(10.0,))
        done.start()
        client.handshake(10.0)
        done.join()
        reply = client.request(gofast.BinMessage(100, b"still here"), timeout=10.0)
        client.close()
        server.close()
        return bytes(reply.data) == b"still here"


def main() -> None:
    mode, reps, level = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    SETTINGS["reader"] = sys.argv[4] if len(sys.argv) > 4 else "thread"
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    logging.getLogger("gofast").setLevel(level)
    for _ in range(reps):
        print(json.dumps(one_round(mode)), flush=True)
    print(json.dumps({"served": serve_a_new_client()}), flush=True)


if __name__ == "__main__":
    main()
