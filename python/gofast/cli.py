"""The ``gofast`` command (also ``python -m gofast``): check a peer, run a
test server, read a stats endpoint, measure.

    gofast ping 127.0.0.1:9998          # handshake, whoami, 10 pings, latency
    gofast ping ./svc.sock              # the same over a Unix socket
    gofast ping host:9998 --tls-ca ca.pem             # over TLS
    gofast serve 127.0.0.1:9998         # echo/count server; Ctrl-C prints its stats
    gofast serve :9998 --tls-cert c.pem --tls-key k.pem   # ... over TLS
    gofast stats http://127.0.0.1:8080  # a /gofast/statistics endpoint as a table
    gofast bench                        # the quick comparison (see gofast bench --help)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import gofast

__all__ = ["main", "parse_address", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_UNSUPPORTED"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNSUPPORTED = 3

EXIT_CODES = f"""\
exit codes:
  {EXIT_OK}  done, and the peer or server did what was asked
  {EXIT_FAILED}  the peer or server failed: unreachable, closed, timed out, wrong answer,
     an HTTP error (ping, stats), a failed measurement (bench)
  {EXIT_USAGE}  usage error: bad arguments or a malformed address
  {EXIT_UNSUPPORTED}  not supported: a Unix socket path for serve --stats (HTTP is on TCP)
"""

ADDRESSES = """\
addresses: host:port, [ipv6]:port (e.g. [::1]:9998), or a Unix socket path
(anything with a "/", e.g. ./gofast.sock).
TLS: any --tls-* option turns it on (PEM files). A client verifies the server
against --tls-ca (or --tls-system-roots) for --tls-server-name (default: the
host dialed; needed for a socket path); --tls-cert/--tls-key give it a client
certificate. A server needs --tls-cert and --tls-key; with --tls-ca it requires
client certificates signed by it (--tls-client-auth to change that).
"""

# The message id the CLI's server echoes and counts, and bench uses.
ECHO_ID = 0x100


@dataclass(frozen=True)
class UnixPath:
    """A Unix socket path given as an address."""

    path: str


Address = tuple[str, int] | UnixPath


def parse_address(text: str) -> Address:
    """``host:port``, ``[v6]:port`` or a path (anything containing ``/``)."""
    if "/" in text:
        return UnixPath(text)
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise argparse.ArgumentTypeError(f"{text!r}: expected [ipv6]:port")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise argparse.ArgumentTypeError(f"{text!r}: expected host:port, [ipv6]:port or a path")
        if ":" in host:
            raise argparse.ArgumentTypeError(f"{text!r}: put an IPv6 address in brackets")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: the port must be a number in 0..65535")
    return host, int(port_text)


def _show(address: tuple[str, int] | str) -> str:
    if isinstance(address, str):
        return address  # a Unix socket path
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Failed(Exception):
    """Ends a command with EXIT_FAILED and its message on stderr."""


def _target(address: Address) -> tuple[str, int] | str:
    """What gofast.connect/listen take: (host, port), or the socket path."""
    return address.path if isinstance(address, UnixPath) else address


def _tcp(address: Address, what: str) -> tuple[str, int]:
    if isinstance(address, UnixPath):
        raise _Unsupported(f"{address.path}: {what} listens on TCP only (host:port)")
    return address


def _add_tls_options(p: argparse.ArgumentParser, server: bool) -> None:
    g = p.add_argument_group("TLS (any of these turns it on)")
    g.add_argument("--tls", action="store_true", help="use TLS (implied by the options below)")
    who = "this server's" if server else "a client certificate's"
    g.add_argument("--tls-cert", metavar="PEM", help=f"{who} certificate chain")
    g.add_argument("--tls-key", metavar="PEM", help=f"{who} private key")
    if server:
        g.add_argument("--tls-ca", metavar="PEM", help="CAs of the client certificates to accept")
        g.add_argument(
            "--tls-client-auth",
            choices=("none", "optional", "required"),
            help="ask clients for a certificate (default: required with --tls-ca, else none)",
        )
    else:
        g.add_argument("--tls-ca", metavar="PEM", help="CAs to verify the server with")
        g.add_argument(
            "--tls-system-roots", action="store_true", help="also trust the system's CAs"
        )
        g.add_argument(
            "--tls-server-name", metavar="NAME", help="name the server's cert must carry"
        )


def _tls(args: argparse.Namespace, server: bool) -> gofast.TLS | None:
    """The TLS settings the --tls-* options ask for, or None."""
    given = [
        getattr(args, k, None)
        for k in ("tls_cert", "tls_key", "tls_ca", "tls_client_auth", "tls_server_name")
    ]
    if not (args.tls or getattr(args, "tls_system_roots", False) or any(given)):
        return None
    parser: argparse.ArgumentParser = args.parser
    try:
        if server:
            if not (args.tls_cert and args.tls_key):
                parser.error("a TLS server needs --tls-cert and --tls-key")
            return gofast.TLS(
                cert=args.tls_cert,
                key=args.tls_key,
                ca=args.tls_ca,
                client_auth=args.tls_client_auth,
            )
        return gofast.TLS(
            cert=args.tls_cert,
            key=args.tls_key,
            ca=args.tls_ca,
            system_roots=args.tls_system_roots,
            server_name=args.tls_server_name,
        )
    except (OSError, gofast.SettingsError) as e:
        parser.error(f"TLS: {e}")


class _Unsupported(Exception):
    """Ends a command with EXIT_UNSUPPORTED."""


def _percentile(ordered: Sequence[float], q: float) -> float:
    # Nearest rank on sorted samples: always one of the measured values.
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _latency_line(samples: list[float]) -> str:
    ordered = sorted(samples)
    parts = [f"min {ordered[0] * 1e6:.0f}"]
    parts += [f"p{q} {_percentile(ordered, q) * 1e6:.0f}" for q in (50, 90, 99)]
    parts.append(f"max {ordered[-1] * 1e6:.0f} us")
    return ", ".join(parts)


def _table(rows: Sequence[tuple[str, object]]) -> str:
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join(f"{k:<{width}}  {v:>20}" for k, v in rows)


# ---- ping ------------------------------------------------------------------------------


def cmd_ping(args: argparse.Namespace) -> int:
    address = _target(args.address)
    tls = _tls(args, server=False)
    count: int = args.count
    try:
        with gofast.Transport.connect(address, name=args.name, timeout=args.timeout, tls=tls) as t:
            peer = t.handshake(args.timeout)
            print(f"connected to {_show(address)}: {peer.name} (version {peer.version.value})")
            if t.tls:
                print(f"TLS: server certificate {t.peer_subject}")
            who = t.whoami(args.timeout)
            tags = ",".join(who.tags) or "-"
            print(f"whoami: name {who.name}, buffersize {who.buffersize}, tags {tags}")
            samples: list[float] = []
            for i in range(count):
                echo = f"gofast-cli-{i}"
                began = time.perf_counter()
                got = t.ping(echo, args.timeout)
                samples.append(time.perf_counter() - began)
                if got != echo:
                    raise _Failed(f"ping {i}: sent {echo!r}, the peer echoed {got!r}")
            if samples:
                print(f"{count} pings: {_latency_line(samples)}")
    except (OSError, gofast.GofastError) as e:
        raise _Failed(f"{_show(address)}: {type(e).__name__}: {e}") from e
    return EXIT_OK


# ---- serve -----------------------------------------------------------------------------


class _EchoServer:
    """Whatever a peer sends, of any id, comes back: a REQUEST as its
    RESPONSE, a STREAM's messages on the stream; POSTs are only counted."""

    def __init__(self) -> None:
        self.transports: list[gofast.Transport] = []
        self.lock = threading.Lock()

    def handle(
        self, stream: gofast.Stream | None, msg: gofast.BinMessage
    ) -> gofast.StreamCallback | None:
        if stream is None:
            return None  # a POST: the transport's n_rxpost counts it
        if stream.is_request:
            stream.respond(msg)
            return None

        def echo(item: gofast.BinMessage | None) -> None:
            if item is None:
                stream.close()
            else:
                stream.send(item, flush=True)

        echo(msg)  # the STREAM-START's own message
        return echo

    def start(self, transport: gofast.Transport, timeout: float) -> None:
        transport.default_handler(self.handle)
        with self.lock:
            self.transports.append(transport)

        def shake() -> None:
            try:
                transport.handshake(timeout)
            except gofast.GofastError as e:
                print(f"gofast serve: handshake failed: {e}", file=sys.stderr, flush=True)
                transport.close()

        threading.Thread(target=shake, name="gofast-cli-handshake", daemon=True).start()

    def close(self) -> dict[str, int]:
        with self.lock:
            transports = list(self.transports)
        totals = dict.fromkeys(gofast.STAT_NAMES, 0)
        for t in transports:
            t.close()
            for k, v in t.stats().items():
                totals[k] = totals.get(k, 0) + v
        return totals


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def cmd_serve(args: argparse.Namespace) -> int:
    address = _target(args.address)
    tls = _tls(args, server=True)
    stats_address = None if args.stats is None else _tcp(args.stats, "--stats")
    # SIGTERM ends it like Ctrl-C does: close everything, print the stats.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    server = _EchoServer()
    http: gofast.StatsServer | None = None
    try:
        listener = gofast.listen(address, tls=tls)
        if stats_address is not None:
            http = gofast.serve_stats(stats_address)
    except OSError as e:
        raise _Failed(f"cannot listen: {e}") from e
    try:
        over = " (TLS)" if tls is not None else ""
        print(f"gofast serve: listening on {_show(listener.address)}{over}", flush=True)
        if http is not None:
            print(f"gofast serve: stats on {http.url}", flush=True)
        while True:
            transport = listener.accept(name=args.name)
            server.start(transport, args.timeout)
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()
        if http is not None:
            http.close()
        totals = server.close()
    print(f"gofast serve: served {len(server.transports)} connection(s)")
    print(_table(sorted(totals.items())), flush=True)
    return EXIT_OK


# ---- stats -----------------------------------------------------------------------------


def _stats_url(url: str, name: str | None, keys: str | None) -> str:
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"{url!r} is not an http(s) URL")
    path = parts.path if parts.path not in ("", "/") else "/gofast/statistics"
    query = [(k, v) for k, v in (("name", name), ("keys", keys)) if v is not None]
    extra = urlencode(query)
    joined = "&".join(q for q in (parts.query, extra) if q)
    return urlunsplit((parts.scheme, parts.netloc, path, joined, ""))


def cmd_stats(args: argparse.Namespace) -> int:
    try:
        url = _stats_url(args.url, args.name, args.keys)
    except argparse.ArgumentTypeError as e:
        args.parser.error(str(e))
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as reply:
            body = reply.read()
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace").strip()
        raise _Failed(f"{url}: HTTP {e.code}: {detail}") from e
    except (urllib.error.URLError, OSError) as e:
        raise _Failed(f"{url}: {e}") from e
    try:
        value: Any = json.loads(body)
    except ValueError as e:
        raise _Failed(f"{url}: not JSON: {e}") from e
    if args.json:
        print(json.dumps(value, indent=2, sort_keys=True))
    elif isinstance(value, list):
        print("\n".join(str(v) for v in value) if value else "(no live transports)")
    elif isinstance(value, dict):
        print(_table(sorted((str(k), v) for k, v in value.items())))
    else:
        raise _Failed(f"{url}: expected a JSON object or array, got {value!r}")
    return EXIT_OK


# ---- bench -----------------------------------------------------------------------------


def _checkout() -> Path | None:
    here = Path.cwd()
    return here if (here / "benches" / "compare" / "__main__.py").is_file() else None


def cmd_bench(args: argparse.Namespace) -> int:
    checkout = None if args.builtin else _checkout()
    if checkout is not None:
        out = Path(args.out or tempfile.mkdtemp(prefix="gofast-bench-"))
        command = [sys.executable, "-m", "benches.compare", "--quick", "--scale", str(args.scale)]
        command += ["--markdown", str(out / "compare.md"), "--chart", str(out / "compare.png")]
        print(f"gofast bench: running {' '.join(command[1:])} in {checkout}", flush=True)
        rc = subprocess.call(command, cwd=checkout)
        if rc != 0:
            print(
                "gofast bench: the comparison failed; it needs benches/requirements.txt "
                "(scripts/bench installs it), or run gofast bench --builtin",
                file=sys.stderr,
            )
            return EXIT_FAILED
        return EXIT_OK
    print(
        "gofast bench: built-in measurement, gofast only, both ends in this process on "
        "127.0.0.1 (no checkout here: the comparison with grpcio, pyzmq, asyncio and raw "
        "sockets is python -m benches.compare --quick, from a checkout)",
        flush=True,
    )
    try:
        return _builtin_bench(args.scale)
    except (OSError, gofast.GofastError) as e:
        raise _Failed(f"bench: {type(e).__name__}: {e}") from e


def _builtin_bench(scale: float) -> int:
    n_requests = max(10, int(20_000 * scale))
    n_posts = max(100, int(200_000 * scale))
    payload = gofast.BinMessage(ECHO_ID, b"x" * 64)
    posts = [0]
    all_posted = threading.Event()

    def on_post(batch: list[gofast.BinMessage]) -> None:
        posts[0] += len(batch)
        if posts[0] >= n_posts:
            all_posted.set()

    def on_request(stream: gofast.Stream | None, msg: gofast.BinMessage) -> None:
        if stream is not None:
            stream.respond(msg)

    with gofast.listen(("127.0.0.1", 0)) as lis:
        client = gofast.Transport.connect(lis.address, name="bench-client")
        server = lis.accept(name="bench-server", timeout=10)
    with client, server:
        server.subscribe_batch(ECHO_ID, on_post)
        server.default_handler(on_request)
        shake = threading.Thread(target=server.handshake)
        shake.start()
        client.handshake()
        shake.join()
        began = time.perf_counter()
        for i in range(n_posts):
            client.post(payload, flush=i == n_posts - 1)
        if not all_posted.wait(60):
            raise _Failed(f"bench: only {posts[0]} of {n_posts} posts arrived in 60 s")
        post_rate = n_posts / (time.perf_counter() - began)
        request = gofast.BinMessage(ECHO_ID + 1, b"x" * 64)
        samples: list[float] = []
        for _ in range(n_requests):
            t0 = time.perf_counter()
            client.request(request, None, 10.0)
            samples.append(time.perf_counter() - t0)
    print(f"post, 64 B, one way:   {post_rate:>12,.0f} msg/s  ({n_posts:,} messages)")
    rate = n_requests / sum(samples)
    print(f"request/response, 64 B: {rate:>11,.0f} req/s  ({n_requests:,} sequential)")
    print(f"request latency: {_latency_line(samples)}", flush=True)
    return EXIT_OK


# ---- main ------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    ap = argparse.ArgumentParser(
        prog="gofast",
        description=__doc__,
        epilog=ADDRESSES + "\n" + EXIT_CODES,
        formatter_class=formatter,
    )
    ap.add_argument("--version", action="version", version=f"gofast {_dist_version()}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run: Callable[[argparse.Namespace], int], text: str) -> Any:
        p = sub.add_parser(
            name,
            help=text,
            description=text,
            epilog=ADDRESSES + "\n" + EXIT_CODES,
            formatter_class=formatter,
        )
        p.set_defaults(run=run, parser=p)
        return p

    p = command(
        "ping",
        cmd_ping,
        "Connect to ADDRESS, handshake, ask whoami, then send --count pings and print "
        "their latency percentiles (microseconds).",
    )
    p.add_argument("address", metavar="ADDRESS", type=parse_address)
    p.add_argument("-n", "--count", type=int, default=10, help="pings to send (default 10)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per step (default 5)")
    p.add_argument("--name", default="gofast-cli", help="our name in the handshake")
    _add_tls_options(p, server=False)

    p = command(
        "serve",
        cmd_serve,
        "Listen on ADDRESS (port 0 picks one; the first line says which) and serve every "
        "connection: REQUESTs and STREAM messages are echoed back, POSTs counted. "
        "Ctrl-C or SIGTERM stops it and prints the counters summed over its connections.",
    )
    p.add_argument("address", metavar="ADDRESS", type=parse_address)
    p.add_argument(
        "--stats",
        metavar="ADDRESS",
        type=parse_address,
        help="also serve /gofast/transports, /gofast/statistics and /metrics here",
    )
    p.add_argument("--name", default="gofast-serve", help="our name in the handshakes")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per handshake")
    _add_tls_options(p, server=True)

    p = command(
        "stats",
        cmd_stats,
        "GET a stats endpoint (gofast.serve_stats, or a Go service's) and print it as a "
        "table. URL is http://host:port[/path]; without a path, /gofast/statistics.",
    )
    p.add_argument("url", metavar="URL")
    p.add_argument("--name", help="one transport's counters (?name=)")
    p.add_argument("--keys", help="comma-separated counters to show (?keys=)")
    p.add_argument("--json", action="store_true", help="print the JSON as it came")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")

    p = command(
        "bench",
        cmd_bench,
        "The quick comparison: from a checkout (benches/compare in the current directory) "
        "runs python -m benches.compare --quick, which compares gofast with grpcio, pyzmq, "
        "asyncio and raw sockets (its packages: benches/requirements.txt); elsewhere, or "
        "with --builtin, a built-in gofast-only measurement of posts and requests.",
    )
    p.add_argument("--scale", type=float, default=1.0, help="multiply message counts")
    p.add_argument("--builtin", action="store_true", help="the built-in measurement only")
    p.add_argument("--out", help="directory for the comparison's table and chart (a new temp dir)")
    return ap


def _dist_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gofast")
    except PackageNotFoundError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except _Unsupported as e:
        print(f"gofast {args.command}: {e}", file=sys.stderr)
        return EXIT_UNSUPPORTED
    except _Failed as e:
        print(f"gofast {args.command}: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except BrokenPipeError:
        # Output piped into head and the like: not a failure of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
