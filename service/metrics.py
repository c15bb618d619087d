"""Prometheus metrics of one app (a private registry, so several apps can coexist in tests).

The models' metrics (applied, replayed, forecasts, ..., series, streams, backlog) live
where the models do: in this process under the local engine, in the shard actors under
Ray, where `/metrics` shows their sums over the actors (`ShardTotals`), so that it
means the same on both engines.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

#: A metric family as plain data (it crosses process boundaries): name, help, type, samples.
Family = tuple[str, str, str, list[tuple[str, dict[str, str], float]]]

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
)


class Metrics:
    """Request counts and latency, observations ingested, forecasts and recalls, live state."""

    def __init__(self, models: bool = True) -> None:
        """``models=False``: the models are elsewhere (Ray's shard actors); export their sums."""
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "episodic_koopman_http_requests",
            "HTTP requests by method, route template and status code.",
            ("method", "route", "status"),
            registry=r,
        )
        self.latency = Histogram(
            "episodic_koopman_http_request_duration_seconds",
            "HTTP request latency (until the response is complete) by method and route.",
            ("method", "route"),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # Counters count events of this process (Prometheus' convention: they restart at 0):
        # ingested - applied - backlog is what replays or deletions took over.
        self.ingested = Counter(
            "episodic_koopman_observations_ingested",
            "Observations acknowledged (durable) by this process.",
            registry=r,
        )
        self.duplicates = Counter(
            "episodic_koopman_observations_duplicate",
            "Identical re-sends of stored observations.",
            registry=r,
        )
        # The models' metrics, in a registry of their own that /metrics includes.
        self.models = CollectorRegistry(auto_describe=True)
        r = self.models
        self.applied = Counter(
            "episodic_koopman_observations_applied",
            "Observations acknowledged by this process and then learned by their models.",
            registry=r,
        )
        self.replayed = Counter(
            "episodic_koopman_observations_replayed",
            "Observations learned again from storage: restoring models at start-up (after "
            "their snapshot), rebuilding reconfigured series, recovering from a failed apply.",
            registry=r,
        )
        self.forecasts = Counter(
            "episodic_koopman_forecasts",
            "Forecasts computed (requests and stream events).",
            registry=r,
        )
        self.recalls = Counter(
            "episodic_koopman_recalls",
            "Forecasts that recalled past episodes from memory.",
            registry=r,
        )
        self.recalled_episodes = Counter(
            "episodic_koopman_recalled_episodes",
            "Episodes used by recalling forecasts.",
            registry=r,
        )
        self.snapshots = Counter(
            "episodic_koopman_snapshots", "Model snapshots written.", registry=r
        )
        self.series = Gauge("episodic_koopman_series", "Series that exist.", registry=r)
        self.streams = Gauge(
            "episodic_koopman_sse_streams", "Open SSE forecast streams.", registry=r
        )
        self.backlog = Gauge(
            "episodic_koopman_apply_backlog",
            "Acknowledged observations not yet applied to models.",
            registry=r,
        )
        self.shard_totals = ShardTotals()
        self.registry.register(self.models if models else self.shard_totals)


def families(registry: CollectorRegistry) -> list[Family]:
    """Every metric family of ``registry`` as plain data."""
    return [
        (m.name, m.documentation, m.type, [(s.name, s.labels, s.value) for s in m.samples])
        for m in registry.collect()
    ]


class ShardTotals(Collector):
    """The shard actors' model metrics, summed (each actor's last reported values).

    Counters and gauges add up over actors (series, streams, backlog are counts too);
    a ``_created`` timestamp is the earliest. An actor restarted by Ray starts its
    counters at 0 again, which Prometheus reads as a counter reset.
    """

    def __init__(self) -> None:
        self.by_actor: dict[int, list[Family]] = {}

    def update(self, index: int, reported: list[Family]) -> None:
        self.by_actor[index] = reported

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, tuple[str, str, dict[tuple[str, tuple], float]]] = {}
        for reported in list(self.by_actor.values()):
            for name, documentation, kind, samples in reported:
                values = merged.setdefault(name, (documentation, kind, {}))[2]
                for sample, labels, value in samples:
                    key = (sample, tuple(sorted(labels.items())))
                    if sample.endswith("_created"):
                        values[key] = min(values.get(key, value), value)
                    else:
                        values[key] = values.get(key, 0.0) + value
        for name, (documentation, kind, values) in merged.items():
            family = Metric(name, documentation, kind)
            for (sample, labels), value in values.items():
                family.add_sample(sample, dict(labels), value)
            yield family
