"""The gofast command, run as ``python -m gofast`` in child processes (each
bounded in time, each stopped by its pid): help, ping against serve, serve's
stats on SIGINT/SIGTERM, stats against serve --stats, bench's wiring, and
the exit codes scripts rely on."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import trustme

import gofast
from gofast.cli import EXIT_FAILED, EXIT_OK, EXIT_UNSUPPORTED, EXIT_USAGE, parse_address

GOFAST = [sys.executable, "-m", "gofast"]


def run(
    *args: str, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GOFAST, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


class Serve:
    """``gofast serve`` in a child process, its stdout read as it comes."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*GOFAST, "serve", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.lines.append("<eof>")
            self.changed.notify_all()

    def wait_line(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        """The first output line matching ``pattern``, waiting for it."""
        found: list[re.Match[str]] = []

        def seen() -> bool:
            found[:] = [m for m in (re.search(pattern, ln) for ln in self.lines) if m][:1]
            return bool(found) or "<eof>" in self.lines

        with self.changed:
            if not self.changed.wait_for(seen, timeout) or not found:
                raise AssertionError(f"no line matching {pattern!r} in {self.lines}")
        return found[0]

    @property
    def address(self) -> str:
        return self.wait_line(r"listening on (\S+)").group(1)

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, str]:
        """Signals it by pid; returns its exit code and whole stdout."""
        self.proc.send_signal(signum)
        try:
            rc = self.proc.wait(timeout=30)
        finally:
            self.kill()
        self.reader.join(10)
        return rc, "\n".join(self.lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


@pytest.fixture
def serve() -> Iterator[type[Serve]]:
    started: list[Serve] = []

    class Started(Serve):
        def __init__(self, *args: str) -> None:
            super().__init__(*args)
            started.append(self)

    yield Started
    for s in started:
        s.kill()


def counters(text: str) -> dict[str, int]:
    """The ``name  value`` rows of a printed counter table."""
    return {m[1]: int(m[2]) for m in re.finditer(r"^(n_\w+|timestamp)\s+(\d+)$", text, re.M)}


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# ---- help and addresses ----------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["ping"], ["serve"], ["stats"], ["bench"]])
def test_help_for_each_command_documents_exit_codes(command: list[str]) -> None:
    r = run(*command, "--help")
    assert r.returncode == 0, r.stderr
    assert "exit codes:" in r.stdout
    assert "3  not supported: a Unix socket path for serve --stats" in r.stdout


def test_addresses_parse() -> None:
    assert parse_address("127.0.0.1:9998") == ("127.0.0.1", 9998)
    assert parse_address("localhost:0") == ("localhost", 0)
    assert parse_address("[::1]:9998") == ("::1", 9998)
    assert parse_address("./gofast.sock") == gofast.cli.UnixPath("./gofast.sock")


@pytest.mark.parametrize("bad", ["nope", "::1:9998", "[::1]9998", "host:port", "host:70000"])
def test_a_malformed_address_is_a_usage_error(bad: str) -> None:
    r = run("ping", bad)
    assert r.returncode == EXIT_USAGE
    assert "ADDRESS" in r.stderr


def test_ping_and_serve_over_a_unix_socket(serve: type[Serve], tmp_path: Path) -> None:
    path = str(tmp_path / "gofast.sock")
    server = serve(path)
    assert server.address == path
    r = run("ping", path, "-n", "3")
    assert r.returncode == EXIT_OK, r.stderr
    assert "3 pings:" in r.stdout
    rc, out = server.stop(signal.SIGTERM)
    assert rc == EXIT_OK and "served 1 connection(s)" in out


def test_a_stats_endpoint_on_a_socket_path_is_not_supported(tmp_path: Path) -> None:
    r = run("serve", "127.0.0.1:0", "--stats", str(tmp_path / "stats.sock"))
    assert r.returncode == EXIT_UNSUPPORTED
    assert "--stats listens on TCP only" in r.stderr


class Pems:
    """A trustme CA and a server certificate for 127.0.0.1, as files."""

    def __init__(self, where: Path) -> None:
        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1", "localhost")
        self.ca, self.cert, self.key = where / "ca.pem", where / "cert.pem", where / "key.pem"
        ca.cert_pem.write_to_path(str(self.ca))
        leaf.cert_chain_pems[0].write_to_path(str(self.cert))
        leaf.private_key_pem.write_to_path(str(self.key))


def test_ping_and_serve_over_tls(serve: type[Serve], tmp_path: Path) -> None:
    pems = Pems(tmp_path)
    server = serve("127.0.0.1:0", "--tls-cert", str(pems.cert), "--tls-key", str(pems.key))
    assert "(TLS)" in server.wait_line(r"listening on .*").group(0)
    r = run("ping", server.address, "-n", "2", "--tls-ca", str(pems.ca))
    assert r.returncode == EXIT_OK, r.stderr
    assert "TLS: server certificate" in r.stdout and "2 pings:" in r.stdout
    # Without TLS, or trusting another CA: the handshake fails, exit 1.
    plain = run("ping", server.address, "--timeout", "5")
    assert plain.returncode == EXIT_FAILED
    (tmp_path / "other").mkdir()
    other = Pems(tmp_path / "other")
    wrong = run("ping", server.address, "--timeout", "5", "--tls-ca", str(other.ca))
    assert wrong.returncode == EXIT_FAILED
    assert "TLSError" in wrong.stderr and "not signed by a CA" in wrong.stderr
    rc, _ = server.stop(signal.SIGTERM)
    assert rc == EXIT_OK


def test_tls_usage_errors(tmp_path: Path) -> None:
    pems = Pems(tmp_path)
    r = run("serve", "127.0.0.1:0", "--tls-cert", str(pems.cert))
    assert r.returncode == EXIT_USAGE and "--tls-cert and --tls-key" in r.stderr
    r = run("ping", "127.0.0.1:1", "--tls-ca", str(tmp_path / "missing.pem"))
    assert r.returncode == EXIT_USAGE and "TLS:" in r.stderr


def test_ping_an_unreachable_peer_fails() -> None:
    r = run("ping", f"127.0.0.1:{free_port()}", "--timeout", "5")
    assert r.returncode == EXIT_FAILED
    assert "ConnectionRefusedError" in r.stderr


# ---- ping against serve ----------------------------------------------------------------


def test_ping_against_serve_then_sigint_prints_the_stats(serve: type[Serve]) -> None:
    server = serve("127.0.0.1:0")
    r = run("ping", server.address, "-n", "7")
    assert r.returncode == EXIT_OK, r.stderr
    assert "gofast-serve (version 1)" in r.stdout
    assert "whoami: name gofast-serve" in r.stdout
    assert re.search(r"^7 pings: min \d+, p50 \d+, p90 \d+, p99 \d+, max \d+ us$", r.stdout, re.M)
    rc, out = server.stop(signal.SIGINT)
    assert rc == EXIT_OK
    assert "served 1 connection(s)" in out
    stats = counters(out)
    assert set(stats) == set(gofast.STAT_NAMES)
    assert stats["n_rxreq"] >= 7 and stats["n_txresp"] == stats["n_rxreq"]


def test_ping_over_ipv6(serve: type[Serve]) -> None:
    server = serve("[::1]:0")
    assert server.address.startswith("[::1]:")
    r = run("ping", server.address, "-n", "2")
    assert r.returncode == EXIT_OK, r.stderr
    assert "2 pings:" in r.stdout


def test_serve_echoes_requests_and_streams_and_sigterm_prints_stats(serve: type[Serve]) -> None:
    server = serve("127.0.0.1:0")
    host, port = parse_address(server.address)  # type: ignore[misc]
    with gofast.Transport.connect((host, port), name="cli-test") as t:
        t.handshake()
        assert t.request(gofast.BinMessage(500, b"hello"), None, 10).data == b"hello"
        stream = t.stream(gofast.BinMessage(501, b"first"))
        assert (m := stream.recv(10)) is not None and m.data == b"first"
        stream.send(gofast.BinMessage(501, b"second"), flush=True)
        assert (m := stream.recv(10)) is not None and m.data == b"second"
        stream.close()
        assert stream.recv(10) is None  # it closes its side once we closed ours
        for _ in range(3):
            t.post(gofast.BinMessage(502, b"p"), flush=True)
        t.ping("sync", 10)  # after the posts: the server has read them
    rc, out = server.stop(signal.SIGTERM)
    assert rc == EXIT_OK
    stats = counters(out)
    assert stats["n_rxpost"] == 3
    assert stats["n_rxstart"] == 1 and stats["n_txstream"] >= 1


def test_serve_on_a_port_in_use_fails() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        r = run("serve", f"127.0.0.1:{port}")
    assert r.returncode == EXIT_FAILED
    assert "cannot listen" in r.stderr


# ---- stats against serve --stats -------------------------------------------------------


def test_stats_reads_serve_endpoints(serve: type[Serve]) -> None:
    server = serve("127.0.0.1:0", "--stats", "127.0.0.1:0")
    url = server.wait_line(r"stats on (\S+)").group(1)
    host, port = parse_address(server.address)  # type: ignore[misc]
    with gofast.Transport.connect((host, port), name="cli-stats") as t:
        t.handshake()
        for _ in range(4):
            t.post(gofast.BinMessage(502, b"p"), flush=True)
        t.ping("sync", 10)

        r = run("stats", url, "--name", "gofast-serve")
        assert r.returncode == EXIT_OK, r.stderr
        stats = counters(r.stdout)
        assert set(stats) == set(gofast.STAT_NAMES) | {"timestamp"}
        assert stats["n_rxpost"] == 4

        r = run("stats", url, "--name", "gofast-serve", "--keys", "n_rxpost,n_rxreq")
        assert r.returncode == EXIT_OK, r.stderr
        assert set(counters(r.stdout)) == {"n_rxpost", "n_rxreq", "timestamp"}

        r = run("stats", url + "/gofast/transports")
        assert r.returncode == EXIT_OK, r.stderr
        assert r.stdout.split() == ["gofast-serve"]

        r = run("stats", url, "--name", "no-such")
        assert r.returncode == EXIT_FAILED
        assert 'HTTP 500: invalid name "no-such"' in r.stderr
    rc, _ = server.stop()
    assert rc == EXIT_OK


def test_stats_exit_codes() -> None:
    assert run("stats", "ftp://127.0.0.1:1/").returncode == EXIT_USAGE
    r = run("stats", f"http://127.0.0.1:{free_port()}", "--timeout", "5")
    assert r.returncode == EXIT_FAILED
    assert "refused" in r.stderr.lower()


# ---- bench -----------------------------------------------------------------------------


def test_bench_builtin_outside_a_checkout(tmp_path: Path) -> None:
    r = run("bench", "--scale", "0.001", cwd=tmp_path, timeout=120)
    assert r.returncode == EXIT_OK, r.stderr
    assert "built-in measurement, gofast only" in r.stdout
    assert re.search(r"post, 64 B, one way: +[\d,]+ msg/s", r.stdout)
    assert re.search(r"request/response, 64 B: +[\d,]+ req/s", r.stdout)


STUB = """\
import sys
from pathlib import Path
Path("argv.txt").write_text("\\n".join(sys.argv[1:]))
sys.exit({rc})
"""


@pytest.mark.parametrize("stub_rc, want", [(0, EXIT_OK), (1, EXIT_FAILED)])
def test_bench_in_a_checkout_runs_the_quick_comparison(
    tmp_path: Path, stub_rc: int, want: int
) -> None:
    # A stand-in checkout whose benches.compare records how it was run.
    compare = tmp_path / "benches" / "compare"
    compare.mkdir(parents=True)
    (tmp_path / "benches" / "__init__.py").write_text("")
    (compare / "__init__.py").write_text("")
    (compare / "__main__.py").write_text(STUB.format(rc=stub_rc))
    out = tmp_path / "out"
    r = run("bench", "--scale", "0.5", "--out", str(out), cwd=tmp_path)
    assert r.returncode == want, r.stderr
    argv = (tmp_path / "argv.txt").read_text().split("\n")
    assert argv[:3] == ["--quick", "--scale", "0.5"]
    assert argv[3:] == ["--markdown", str(out / "compare.md"), "--chart", str(out / "compare.png")]
    assert "benches.compare --quick" in r.stdout


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "gofast"
    r = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("gofast ")


def test_listen_on_an_ipv6_literal() -> None:
    with gofast.listen(("::1", 0)) as lis:
        host, port = lis.address
        assert host == "::1" and port > 0
        with ThreadPoolExecutor(1) as pool:
            accepted = pool.submit(lis.accept, timeout=10)
            with gofast.Transport.connect(("::1", port)) as client, accepted.result(10) as server:
                assert client.peer_address is not None and client.peer_address[0] == "::1"
                assert server.local_address is not None and server.local_address[0] == "::1"
