"""Who gets the CPU: acknowledgements first, but a reader or a lagging model never waits long.

No sleeps: the tests wait (bounded) for the apply worker to be seen deferring, a state
in which it cannot apply anything until a reader comes or the pushes end.
"""

from __future__ import annotations

from service_helpers import SMALL, batch, wait_for, wave


def start(make_client, **overrides):
    client = make_client(**overrides)
    registry, _ = client.app.state.service.live
    client.put("/v1/series/s", json={"params": SMALL})
    return client, registry


def test_a_model_waits_while_pushes_are_in_flight_until_a_reader_comes(make_client):
    client, registry = start(make_client, apply_max_lag=3600.0)
    registry.applier.pushes_in_flight += 1  # another client's push that never ends
    try:
        assert client.post("/v1/series/s/observations", json=batch(wave(60))).status_code == 200
        series = registry.catalog["s"]
        assert series.deferring.wait(20)  # the worker holds back for the push in flight
        assert series.applied == 0 and registry.backlog == 60  # acknowledged, not yet applied
        forecast = client.get("/v1/series/s/forecast", params={"horizon": 3})
        assert forecast.status_code == 200  # read-your-writes: the reader is served at once
        assert series.applied == 60 and registry.backlog == 0
    finally:
        registry.applier.pushes_in_flight -= 1


def test_a_reader_of_another_series_is_not_stuck_behind_a_waiting_model(make_client):
    """One apply worker: while it holds back series s, a read of series t must still pass."""
    client, registry = start(make_client, apply_max_lag=3600.0, read_your_writes_timeout=20.0)
    client.put("/v1/series/t", json={"params": SMALL})
    registry.applier.pushes_in_flight += 1
    try:
        assert client.post("/v1/series/s/observations", json=batch(wave(60))).status_code == 200
        assert registry.catalog["s"].deferring.wait(20)  # the only worker waits on s
        assert client.post("/v1/series/t/observations", json=batch(wave(40))).status_code == 200
        assert registry.catalog["t"].applied == 0  # queued behind s's waiting task
        forecast = client.get("/v1/series/t/forecast", params={"horizon": 3})
        assert forecast.status_code == 200
        assert registry.catalog["t"].applied == 40
    finally:
        registry.applier.pushes_in_flight -= 1


def test_a_lagging_model_catches_up_under_endless_pushes(make_client):
    client, registry = start(make_client, apply_max_lag=0.05)
    registry.applier.pushes_in_flight += 1
    try:
        assert client.post("/v1/series/s/observations", json=batch(wave(60))).status_code == 200
        series = registry.catalog["s"]
        assert wait_for(lambda: series.applied == 60)
    finally:
        registry.applier.pushes_in_flight -= 1


def test_with_no_push_in_flight_models_apply_at_once(make_client):
    client, registry = start(make_client, apply_max_lag=3600.0)
    assert client.post("/v1/series/s/observations", json=batch(wave(60))).status_code == 200
    series = registry.catalog["s"]
    assert wait_for(lambda: series.applied == 60)
