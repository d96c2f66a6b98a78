"""Every example runs by itself, exits 0 and prints its summary."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT = 60

# Each example: the lines its summary must contain, in order (regexes, matched whole).
EXPECTED: dict[str, list[str]] = {
    "aio_request.py": [
        r"posted 100 notes, the server received 100",
        r"doc-1: found, 'the first document'",
        r"doc-9: not found",
        r"slow lookup, answered after an await: 'computed: 42'",
        r"gave up a request after 0\.1 s \(asyncio\.timeout\): its late response is dropped",
        r"range \[10, 15\): \[10, 11, 12, 13, 14\]",
        r"client: 2 timeouts \(incl\. 1 cancelled\), server: 1 client served",
    ],
    "aio_mixed.py": [
        r"sync client: 're: hello from a thread'",
        r"sync client streamed 5 items: \[0, 1, 4, 9, 16\]",
        r"aio server: 1 request, 1 stream",
    ],
    "aio_post.py": [
        r"client posted 1000 documents, server received 1000",
        r"last document: doc-999 \(15 bytes of body\)",
        r"server posted 1 greeting, client received: hello from the server",
    ],
    "aio_stream.py": [
        r"client closed the stream after 100 entries",
        r"server saw the client's close and stopped after sending \d+ entries",
        r"stream ended on both sides: \d+ more entries were in flight",
    ],
    "post.py": [
        r"client posted 1000 documents, server received 1000",
        r"last document: doc-999 \(15 bytes of body\)",
        r"server posted 1 greeting, client received: hello from the server",
    ],
    "request.py": [
        r"doc-1: found, 'the first document'",
        r"doc-2: found, 'the second document'",
        r"doc-9: not found",
        r"either node can request: server asked the client for its name: example-client",
        r"slow request timed out after 0\.2 s: Timeout",
        r"client: 1 timeout, 1 late response dropped",
    ],
    "stream_close_after_100.py": [
        r"client closed the stream after 100 entries",
        r"server saw the client's close and stopped after sending \d+ entries",
        r"stream ended on both sides: client callback got None",
    ],
    "kv_server.py": [
        r"client-0: stored 100 keys, read 100 back, read client-2's key-99: 'v2-99'",
        r"client-1: stored 100 keys, read 100 back, read client-0's key-99: 'v0-99'",
        r"client-2: stored 100 keys, read 100 back, read client-1's key-99: 'v1-99'",
        r"server: 3 clients connected, 300 puts, 303 gets, 0 refused",
    ],
    "range_query.py": [
        r"range \[100, 150\): received 50 entries, remote closed the stream",
        r"range \[0, 100000\): took 100 entries, then closed the stream",
        r"server: query \[100, 150\) sent 50 of 50 entries",
        r"server: query \[0, 100000\) sent \d+ of 100000 entries, stopped by the client",
    ],
    "unix_socket.py": [
        r"server listening on /\S+/kv\.sock",
        r"client: put 3 keys, got 'three' back over the Unix socket",
        r"client's view of the server: /\S+/kv\.sock",
    ],
    "tls.py": [
        r"server listening on 127\.0\.0\.1:\d+ with TLS",
        r"client: TLS handshake done, server certificate O=.+",
        r"client: 're: hello' over TLS",
        r"a client that trusts another CA: TLSError",
    ],
    "mtls.py": [
        r"server requires client certificates: True",
        r"server: a request from O=.*CN=alice",
        r"alice: 'hello, alice'",
        r"a client without a certificate: TLSError \(.*requires a client certificate.*\)",
    ],
    "typed_tour.py": [
        r"gofast \d+\.\d+\.\d+\S*: tour-client shook hands with tour-server \(version 1\)",
        r"posted 1 greeting and 3 notes; the server got 3 notes in 1\+ batch\(es\)",
        r"request: Greeting\(text='re: hello'\); as it came: BinMessage\(id=100, \.\.\.\)",
        r"request_many: \['re: a', 're: b'\]",
        r"stream: 3 rows by recv\(\), 3 by iteration, 3 by messages\(\)",
        r"ping 'echo'; whoami tour-server; 1 unsubscribed post to the default handler",
        r"stats: 5 posts, 3 streams; 2 live transports, served over HTTP",
        r"a response of another type: ProtocolError",
    ],
}

# The guide's server and client, sync and asyncio: any server with any client.
SERVERS = ("server.py", "aio_server.py")
CLIENTS = ("client.py", "aio_client.py")
SERVER_LINES = [
    r"example-server listening on 127\.0\.0\.1:\d+",
    r"server: client example-client: 100 posts, 10 requests",
    r"server: served 1 client\(s\)",
]
CLIENT_LINES = [
    r"client: handshake with example-server \(version 1\)",
    r"client: posted 100, requested 10 \(all answered\), ping 'hello'",
    r"client: server counted 100 posts and 10 requests",
]


def run_example(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=EXAMPLES.parent,
    )


def assert_lines(output: str, patterns: list[str]) -> None:
    """Each pattern matches a whole line of ``output``, in order."""
    lines = output.splitlines()
    at = 0
    for pattern in patterns:
        while at < len(lines) and not re.fullmatch(pattern, lines[at]):
            at += 1
        assert at < len(lines), f"no line matching {pattern!r} (in order) in:\n{output}"
        at += 1


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_and_prints_its_summary(name: str) -> None:
    done = run_example(name)
    assert done.returncode == 0, f"{name} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert_lines(done.stdout, EXPECTED[name])
    assert "Traceback" not in done.stderr, done.stderr


def test_the_asyncio_example_runs_on_uvloop() -> None:
    pytest.importorskip("uvloop")
    done = run_example("aio_request.py", "--uvloop")
    assert done.returncode == 0, done.stderr
    assert_lines(done.stdout, EXPECTED["aio_request.py"])


def test_stream_example_stops_the_server_early() -> None:
    done = run_example("range_query.py")
    assert done.returncode == 0, done.stderr
    m = re.search(r"query \[0, 100000\) sent (\d+) of 100000", done.stdout)
    assert m is not None, done.stdout
    assert 100 <= int(m.group(1)) < 100_000


@pytest.mark.parametrize("client_name", CLIENTS)
@pytest.mark.parametrize("server_name", SERVERS)
def test_server_and_client_examples_talk_to_each_other(server_name: str, client_name: str) -> None:
    server = subprocess.Popen(
        [sys.executable, str(EXAMPLES / server_name), "--port", "0", "--timeout", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=EXAMPLES.parent,
    )
    try:
        lines: queue.Queue[str] = queue.Queue()
        out = server.stdout
        assert out is not None

        def pump() -> None:
            for line in out:
                lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        first = lines.get(timeout=TIMEOUT)
        m = re.fullmatch(r"example-server listening on 127\.0\.0\.1:(\d+)\n", first)
        assert m is not None, first
        port = m.group(1)

        client = run_example(client_name, "--port", port)
        assert client.returncode == 0, f"{client.stdout}\n{client.stderr}"
        assert_lines(client.stdout, CLIENT_LINES)

        assert server.wait(timeout=TIMEOUT) == 0
        rest: list[str] = []
        while len(rest) < len(SERVER_LINES) - 1:
            rest.append(lines.get(timeout=TIMEOUT))
        assert_lines(first + "".join(rest), SERVER_LINES)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)


def test_every_example_is_tested() -> None:
    examples = {p.name for p in EXAMPLES.glob("*.py")}
    mine = set(EXPECTED) | set(SERVERS) | set(CLIENTS)
    assert mine <= examples
    for name in mine:
        text = (EXAMPLES / name).read_text()
        assert text.startswith('"""'), f"{name} has no module docstring"
        assert 'if __name__ == "__main__":' in text


def test_examples_are_mypy_strict_clean() -> None:
    pytest.importorskip("mypy")
    names = sorted(set(EXPECTED) | set(SERVERS) | set(CLIENTS))
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", *names],
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
        cwd=EXAMPLES,
        env={**os.environ, "MYPY_CACHE_DIR": os.devnull},
    )
    assert done.returncode == 0, done.stdout + done.stderr
