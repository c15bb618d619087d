"""Snapshots are written off the apply path, as the policy says, and flushed at shutdown.

No sleeps: a test hook blocks the snapshot writer on a `threading.Event`, and the tests
wait (bounded) for the writer to reach it.
"""

from __future__ import annotations

import math
import threading

import pytest
from service_helpers import (
    SMALL,
    assert_same_forecast,
    batch,
    reference_forecast,
    stored_snapshots,
    wait_for,
    wave,
)

from service.snapshot_policy import SnapshotPolicy

# The same policy and writer whichever store keeps the snapshots (files or PostgreSQL).
pytestmark = pytest.mark.both_backends


class Gate:
    """Blocks the snapshot writer before it stores a snapshot, until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, series: object) -> None:
        self.entered.set()
        assert self.release.wait(60), "the test never released the snapshot writer"


def test_a_read_is_served_while_a_snapshot_write_is_blocked(make_client, make_settings):
    client = make_client()
    registry = client.app.state.service.registry
    client.put("/v1/series/s", json={"params": SMALL})
    values = wave(350)
    client.post("/v1/series/s/observations", json=batch(values[:300]))
    client.get("/v1/series/s/forecast")  # the model has applied all 300
    gate = Gate()
    registry.snapshot_writer.before_write = gate
    try:
        assert registry.snapshot_dirty() == 1  # never snapshotted: due at the first check
        assert gate.entered.wait(30)  # captured, now blocked before writing its file
        # Applies and reads go on while the writer is stuck in the middle of a snapshot.
        client.post("/v1/series/s/observations", json=batch(values[300:], 300))
        forecast = client.get("/v1/series/s/forecast").json()
        assert forecast["n_observations"] == 350
        assert_same_forecast(forecast, reference_forecast(SMALL, values, 24))
        assert stored_snapshots(make_settings()) == {}
    finally:
        gate.release.set()
    assert registry.wait_for_snapshots(30)
    # The state when it was captured.
    assert list(stored_snapshots(make_settings()).values()) == [300]


def test_policy_due_by_bytes_count_and_age() -> None:
    policy = SnapshotPolicy(bytes_per_observation=100, max_observations=1000, max_age_seconds=60)
    assert not policy.due(0, 0, 10**6)  # nothing new: never
    assert policy.due(1, 0, 0)  # never snapshotted (size 0): at once
    assert not policy.due(99, 10_000, 0) and policy.due(100, 10_000, 0)  # 100 x 100 B
    assert policy.due(1000, 10**9, 0) and not policy.overdue(999) and policy.overdue(1000)
    assert not policy.due(1, 10**9, 59.9) and policy.due(1, 10**9, 60)


def test_the_service_snapshots_when_the_new_observations_pay_for_it(make_client, make_settings):
    client = make_client(snapshot_bytes_per_observation=1000.0)
    registry = client.app.state.service.registry
    client.put("/v1/series/s", json={"params": SMALL})
    client.post("/v1/series/s/observations", json=batch(wave(200)))
    client.get("/v1/series/s/forecast")
    assert registry.snapshot_dirty() == 1
    assert registry.wait_for_snapshots(30)
    series = registry.catalog["s"]
    size = series.snapshot_bytes
    assert stored_snapshots(make_settings()) == {series.model_incarnation: 200}
    assert size == registry.snapshots.size(series.model_incarnation, 200) > 0
    needed = math.ceil(size / 1000.0)
    values = wave(200 + needed)
    client.post("/v1/series/s/observations", json=batch(values[200 : 199 + needed], 200))
    client.get("/v1/series/s/forecast")
    assert registry.snapshot_dirty() == 0  # one observation short of paying for the snapshot
    client.post("/v1/series/s/observations", json=batch(values[199 + needed :], 199 + needed))
    client.get("/v1/series/s/forecast")
    assert registry.snapshot_dirty() == 1
    assert registry.wait_for_snapshots(30)
    # The older one is gone.
    assert list(stored_snapshots(make_settings()).values()) == [200 + needed]
    # Few new observations, but the last snapshot is old: due by age.
    client.post("/v1/series/s/observations", json=batch(wave(1, start=200 + needed), 200 + needed))
    client.get("/v1/series/s/forecast")
    assert registry.snapshot_dirty() == 0
    series.snapshot_at -= registry.settings.snapshot_max_age_seconds
    assert registry.snapshot_dirty() == 1
    assert registry.wait_for_snapshots(30)
    assert list(stored_snapshots(make_settings()).values()) == [201 + needed]


def test_snapshot_every_bounds_replay_whatever_the_byte_budget(make_client, make_settings):
    client = make_client(snapshot_every=100, snapshot_bytes_per_observation=1e-3)
    registry = client.app.state.service.registry
    client.put("/v1/series/s", json={"params": SMALL})
    client.post("/v1/series/s/observations", json=batch(wave(100)))
    client.get("/v1/series/s/forecast")
    assert registry.wait_for_snapshots(30)  # requested by the apply path, no periodic check
    assert list(stored_snapshots(make_settings()).values()) == [100]


def test_shutdown_flushes_pending_snapshots(make_client, make_settings):
    client = make_client()
    registry = client.app.state.service.registry
    for name in "abc":
        client.put(f"/v1/series/{name}", json={"params": SMALL})
        client.post(f"/v1/series/{name}/observations", json=batch(wave(120)))
        client.get(f"/v1/series/{name}/forecast")
    gate = Gate()
    registry.snapshot_writer.before_write = gate
    assert registry.snapshot_writer.request(registry.catalog["a"])
    assert gate.entered.wait(30)  # a: captured, blocked before its write
    assert registry.snapshot_writer.request(registry.catalog["b"])  # b: queued behind it
    assert registry.snapshot_writer.pending() == 2
    # c has only new observations: shutdown itself requests its snapshot.
    stopping = threading.Thread(target=client.__exit__, args=(None, None, None))
    stopping.start()
    try:
        assert wait_for(lambda: registry.applier.closing, timeout=30)
    finally:
        gate.release.set()
    stopping.join(60)
    assert not stopping.is_alive()
    incarnations = {registry.catalog[n].model_incarnation for n in "abc"}
    assert stored_snapshots(make_settings()) == dict.fromkeys(incarnations, 120)
    restarted = make_client()
    assert_same_forecast(
        restarted.get("/v1/series/b/forecast").json(), reference_forecast(SMALL, wave(120), 24)
    )
    assert "episodic_koopman_observations_replayed_total 0.0" in restarted.get("/metrics").text
