"""Metrics on Ray: `chatapp.observability.metrics.Instruments` over Ray's metrics API.

Every replica and shard records into Ray's metrics; each node's metrics agent exports
its workers' series (prefixed `ray_`) on the node's metrics port, where Prometheus scrapes
them together with Ray Serve's own. Ray Serve's flavour of the API adds, inside a replica,
its `application`, `deployment` and `replica` labels (none in a shard actor). One
instrument per name per process, label values bound once per child.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from ray.serve import metrics as ray_metrics

from chatapp.observability.metrics import CounterFamily, GaugeFamily, HistogramFamily


class _Family:
    def __init__(self, metric: Any, labels: Sequence[str], record: Callable[..., None]) -> None:
        self._metric = metric
        self._keys = tuple(labels)
        self._record = record
        self._children: dict[tuple[str, ...], _Child] = {}

    def labels(self, *values: str) -> _Child:
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self._keys):
                raise ValueError(f"{self._keys} wants {len(self._keys)} label values: {values}")
            child = _Child(self._record, dict(zip(self._keys, values, strict=True)))
            self._children[values] = child
        return child


class _Child:
    __slots__ = ("_record", "_tags")

    def __init__(self, record: Callable[..., None], tags: dict[str, str]) -> None:
        self._record = record
        self._tags = tags

    def inc(self, amount: float = 1) -> None:
        if amount:  # Ray's counters refuse 0 (prometheus-client's take it as a no-op)
            self._record(amount, tags=self._tags)

    def observe(self, amount: float) -> None:
        self._record(amount, tags=self._tags)

    def set(self, value: float) -> None:
        self._record(value, tags=self._tags)


class RayInstruments:
    """Instruments over `ray.util.metrics`, shared by everything in this process."""

    _families: dict[str, _Family] = {}
    _lock = threading.Lock()

    def _family(
        self, name: str, make: Callable[[], Any], labels: Sequence[str], verb: str
    ) -> _Family:
        with self._lock:
            family = self._families.get(name)
            if family is None:
                metric = make()
                family = _Family(metric, labels, getattr(metric, verb))
                self._families[name] = family
            return family

    def counter(self, name: str, doc: str, labels: Sequence[str]) -> CounterFamily:
        full = f"{name}_total"  # the exposed name, as prometheus-client spells counters
        return self._family(
            full, lambda: ray_metrics.Counter(full, doc, tuple(labels)), labels, "inc"
        )

    def histogram(
        self, name: str, doc: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> HistogramFamily:
        return self._family(
            name,
            lambda: ray_metrics.Histogram(name, doc, list(buckets), tuple(labels)),
            labels,
            "observe",
        )

    def gauge(self, name: str, doc: str, labels: Sequence[str]) -> GaugeFamily:
        return self._family(
            name, lambda: ray_metrics.Gauge(name, doc, tuple(labels)), labels, "set"
        )
