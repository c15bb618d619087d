"""Prometheus metrics of one app (a private registry, so several apps can coexist in tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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

    def __init__(self) -> None:
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
