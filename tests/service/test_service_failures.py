"""A failed apply does not poison its series: the next drain rebuilds the model from storage."""

from __future__ import annotations

import threading

import pytest
from service_helpers import SMALL, assert_same_forecast, batch, reference_forecast, wait_for, wave

from service.applier import Applier

_real_learn = Applier._learn


def failing_learn(times: int | None):
    """An `Applier._learn` that raises on its first ``times`` calls (None: always)."""
    calls = {"n": 0}
    failed = threading.Event()

    def learn(model, record, values):
        calls["n"] += 1
        if times is None or calls["n"] <= times:
            failed.set()
            raise RuntimeError("injected failure")
        _real_learn(model, record, values)

    return staticmethod(learn), failed


def wait_for_failure(client, failed: threading.Event, series_id: str = "s") -> None:
    """Until the failing drain has finished (a read arriving earlier waits on it: a 500)."""
    assert failed.wait(20)
    registry = client.app.state.service.registry
    series = registry.catalog[series_id]
    assert wait_for(lambda: series.failure is not None and not series.scheduled)
    assert series.model is None and registry.backlog == 0


def test_a_failed_apply_is_replayed_by_the_next_read(make_client, monkeypatch):
    client = make_client()
    client.put("/v1/series/s", json={"params": SMALL})
    learn, failed = failing_learn(times=1)
    monkeypatch.setattr(Applier, "_learn", learn)
    values = wave(80)
    assert client.post("/v1/series/s/observations", json=batch(values)).status_code == 200
    wait_for_failure(client, failed)  # the model is dropped: it may hold half a slice
    response = client.get("/v1/series/s/forecast", params={"horizon": 6})
    assert response.status_code == 200, response.text
    # The rebuilt model is the model that never failed.
    assert_same_forecast(response.json(), reference_forecast(SMALL, values, 6))
    assert client.get("/v1/series/s").json()["applied"] == 80


def test_a_persistent_failure_is_500_until_reconfigured(make_client, monkeypatch):
    client = make_client()
    client.put("/v1/series/s", json={"params": SMALL})
    learn, failed = failing_learn(times=None)
    monkeypatch.setattr(Applier, "_learn", learn)
    values = wave(80)
    assert client.post("/v1/series/s/observations", json=batch(values)).status_code == 200
    wait_for_failure(client, failed)
    for _ in range(2):  # each read retries the replay, which fails again
        assert client.get("/v1/series/s/forecast").status_code == 500
    monkeypatch.setattr(Applier, "_learn", staticmethod(_real_learn))
    params = {**SMALL, "window": 40}
    response = client.put("/v1/series/s", json={"params": params})
    assert response.status_code == 200, response.text
    assert response.json()["applied"] == 80
    served = client.get("/v1/series/s/forecast", params={"horizon": 6}).json()
    assert_same_forecast(served, reference_forecast(params, values, 6))


@pytest.mark.parametrize("path", ["/v1/series/s", "/v1/series/s/episodes"])
def test_reads_other_than_forecasts_recover_too(make_client, monkeypatch, path):
    client = make_client()
    learn, failed = failing_learn(times=1)
    monkeypatch.setattr(Applier, "_learn", learn)
    assert client.post("/v1/series/s/observations", json=batch(wave(50))).status_code == 200
    wait_for_failure(client, failed)
    assert client.get(path).status_code == 200
