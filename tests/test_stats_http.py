"""gofast.serve_stats: the reference's /gofast/ endpoints and /metrics, read
with a real HTTP client, and the Prometheus collector in a user's registry."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import gofast
from conftest import wait_until
from gofast.prometheus import GofastCollector

POST_ID = 300


class NamedPair:
    """A handshaken pair with names no other test uses."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.client_name, self.server_name = f"cli-{tag}", f"srv-{tag}"
        self.posts = 0
        with gofast.listen(("127.0.0.1", 0)) as lis:
            with ThreadPoolExecutor(1) as pool:
                accepted = pool.submit(lis.accept, name=self.server_name, timeout=10)
                self.client = gofast.Transport.connect(lis.address, name=self.client_name)
                self.server = accepted.result(timeout=10)
        self.server.subscribe(POST_ID, self._count)
        with ThreadPoolExecutor(1) as pool:
            theirs = pool.submit(self.server.handshake, 10.0)
            self.client.handshake(10.0)
            theirs.result(timeout=10)

    def _count(self, stream: gofast.Stream | None, msg: gofast.BinMessage) -> None:
        self.posts += 1

    def post(self, n: int) -> None:
        """Posts ``n`` messages and waits until both sides counted every frame."""
        want = self.posts + n
        for i in range(n):
            self.client.post(gofast.BinMessage(POST_ID, b"x"), flush=i == n - 1)
        wait_until(lambda: self.posts == want, what="posts handled")

        def idle() -> bool:
            c, s = self.client.stats(), self.server.stats()
            return c["n_tx"] == s["n_rx"] and s["n_tx"] == c["n_rx"]

        wait_until(idle, what="both sides idle")

    def close(self) -> None:
        self.client.close()
        self.server.close()


@pytest.fixture
def pair() -> Iterator[NamedPair]:
    p = NamedPair()
    yield p
    p.close()


@pytest.fixture
def server() -> Iterator[gofast.StatsServer]:
    with gofast.serve_stats(("127.0.0.1", 0)) as s:
        yield s


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return reply.status, dict(reply.headers), reply.read()


def get_json(url: str) -> Any:
    status, headers, body = get(url)
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert headers["Access-Control-Allow-Origin"] == "*"
    return json.loads(body)


def test_transports_lists_live_names_sorted_and_drops_closed(
    server: gofast.StatsServer, pair: NamedPair
) -> None:
    names = get_json(server.url + "/gofast/transports")
    assert isinstance(names, list)
    assert pair.client_name in names and pair.server_name in names
    assert names == sorted(set(names))
    pair.client.close()
    # The reference drops a transport from its registry when it closes; the
    # peer sees EOF and closes too.
    wait_until(
        lambda: (
            not {pair.client_name, pair.server_name}
            & set(get_json(server.url + "/gofast/transports"))
        ),
        what="closed transports gone",
    )


def test_statistics_sums_every_live_transport(server: gofast.StatsServer, pair: NamedPair) -> None:
    pair.post(4)
    before = time.time_ns()
    stats = get_json(server.url + "/gofast/statistics")
    after = time.time_ns()
    assert set(stats) == set(gofast.STAT_NAMES) | {"timestamp"}
    assert before <= stats["timestamp"] <= after
    assert all(isinstance(v, int) for v in stats.values())
    mine = pair.client.stats()
    assert all(stats[k] >= mine[k] for k in gofast.STAT_NAMES)
    assert stats["n_txpost"] >= 4 and stats["n_rxpost"] >= 4


def test_statistics_of_one_name(server: gofast.StatsServer, pair: NamedPair) -> None:
    pair.post(5)
    stats = get_json(f"{server.url}/gofast/statistics?name={pair.client_name}")
    stats.pop("timestamp")
    assert stats == pair.client.stats()
    assert stats["n_txpost"] == 5 and stats["n_rxpost"] == 0


def test_statistics_keys_pick_counters(server: gofast.StatsServer, pair: NamedPair) -> None:
    pair.post(3)
    url = f"{server.url}/gofast/statistics?name={pair.server_name}&keys=n_rxpost,n_txpost,bogus"
    stats = get_json(url)
    # As in the reference: exactly the keys asked (an unknown one reads 0), plus timestamp.
    assert set(stats) == {"n_rxpost", "n_txpost", "bogus", "timestamp"}
    assert (stats["n_rxpost"], stats["n_txpost"], stats["bogus"]) == (3, 0, 0)


def test_unknown_name_is_a_500_as_in_the_reference(server: gofast.StatsServer) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        get(server.url + "/gofast/statistics?name=no-such-transport")
    assert caught.value.code == 500
    assert caught.value.read() == b'invalid name "no-such-transport"\n'
    assert caught.value.headers["Access-Control-Allow-Origin"] == "*"


def test_a_closed_transports_name_is_unknown(server: gofast.StatsServer) -> None:
    p = NamedPair()
    get_json(f"{server.url}/gofast/statistics?name={p.client_name}")
    p.close()
    with pytest.raises(urllib.error.HTTPError) as caught:
        get(f"{server.url}/gofast/statistics?name={p.client_name}")
    assert caught.value.code == 500


def test_other_paths_are_404(server: gofast.StatsServer) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        get(server.url + "/gofast/nothing")
    assert caught.value.code == 404


def test_metrics_in_the_prometheus_text_format(server: gofast.StatsServer, pair: NamedPair) -> None:
    pair.post(6)
    status, headers, body = get(server.url + "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert {f"gofast_{s}" for s in gofast.STAT_NAMES} <= set(families)
    posted = families["gofast_n_txpost"]
    assert posted.type == "counter"
    values = {s.labels["transport"]: s.value for s in posted.samples if s.name.endswith("_total")}
    assert values[pair.client_name] == 6
    assert values[pair.server_name] == 0
    live = families["gofast_transports"]
    assert live.type == "gauge"
    assert live.samples[0].value >= 2  # at least this pair's two names


def test_collector_in_a_users_registry(pair: NamedPair) -> None:
    registry = CollectorRegistry()
    registry.register(GofastCollector())
    pair.post(2)
    labels = {"transport": pair.server_name}
    assert registry.get_sample_value("gofast_n_rxpost_total", labels) == 2
    assert registry.get_sample_value("gofast_n_txpost_total", labels) == 0
    pair.close()
    # A closed transport's series is gone at the next scrape.
    assert registry.get_sample_value("gofast_n_rxpost_total", labels) is None


def test_serves_on_ipv6() -> None:
    with gofast.serve_stats(("::1", 0)) as s:
        assert s.url.startswith("http://[::1]:")
        assert isinstance(get_json(s.url + "/gofast/transports"), list)


def test_transport_names_match_the_endpoint(server: gofast.StatsServer, pair: NamedPair) -> None:
    assert pair.client_name in gofast.transport_names()
    assert get_json(server.url + "/gofast/transports") == gofast.transport_names()


def test_metrics_without_the_extra_says_what_to_install(
    server: gofast.StatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes an import fail, as on a machine without the extra.
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(urllib.error.HTTPError) as caught:
        get(server.url + "/metrics")
    assert caught.value.code == 501
    assert b"gofast[prometheus]" in caught.value.read()
