"""A Prometheus collector for gofast's counters (the ``prometheus`` extra).

>>> from prometheus_client import REGISTRY               # doctest: +SKIP
>>> REGISTRY.register(gofast.prometheus.GofastCollector())

Each counter of :data:`gofast.STAT_NAMES` (``n_tx``, ``n_rxbyte``, ...) is a
Prometheus counter ``gofast_<name>`` (exposed as ``gofast_<name>_total``)
with one series per live transport name (label ``transport``; transports
sharing a name are summed, as ``gofast.stats(name)`` does), and the gauge
``gofast_transports`` counts the live transport names. A closed transport
leaves, so its series ends; one that comes back under the same name starts
again from zero, which Prometheus treats as a counter reset.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import _native

__all__ = ["GofastCollector"]

PREFIX = "gofast_"


class GofastCollector(Collector):
    """Reads the live transports' counters at each scrape."""

    def collect(self) -> Iterator[Metric]:
        names = _native.transport_names()
        families = {stat: _counter(stat) for stat in _native.STAT_NAMES}
        for name in names:
            for stat, value in _native.stats(name).items():
                families[stat].add_metric([name], value)
        yield from families.values()
        yield _gauge(len(names))

    def describe(self) -> Iterator[Metric]:
        # The names without reading the counters, so registering is cheap
        # and the registry can check them for clashes.
        for stat in _native.STAT_NAMES:
            yield _counter(stat)
        yield GaugeMetricFamily(f"{PREFIX}transports", _GAUGE_HELP)


_GAUGE_HELP = "Live (not yet closed) gofast transport names."


def _counter(stat: str) -> CounterMetricFamily:
    return CounterMetricFamily(
        PREFIX + stat,
        f"gofast counter {stat} (as the Go reference names it), per transport name.",
        labels=["transport"],
    )


def _gauge(value: int) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}transports", _GAUGE_HELP, value=value)
