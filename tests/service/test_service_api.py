"""API contract: series lifecycle, pushes, forecasts that explain themselves, memory, metrics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from service_helpers import SMALL, assert_same_forecast, batch, metric, reference_forecast, wave

from episodic_koopman import EpisodicKoopman
from service.settings import Settings

# The API contract holds on either storage backend and either engine.
pytestmark = [pytest.mark.both_backends, pytest.mark.both_engines]


def test_health_ready_docs_and_openapi_paths(client):
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/series",
        "/v1/series/{series_id}",
        "/v1/series/{series_id}/observations",
        "/v1/series/{series_id}/forecast",
        "/v1/series/{series_id}/forecast/stream",
        "/v1/series/{series_id}/episodes",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in paths, path
    push = paths["/v1/series/{series_id}/observations"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/x-ndjson"} <= set(push)


def test_series_lifecycle(client):
    created = client.put("/v1/series/room-1.temp", json={"params": SMALL})
    assert created.status_code == 201
    info = created.json()
    assert info["id"] == "room-1.temp" and info["n_observations"] == 0
    # Given parameters are kept, the service's model defaults come next, then the library's.
    defaults = Settings().model_defaults
    assert info["params"] == EpisodicKoopman.from_flat({**defaults, **SMALL}).to_flat()
    assert client.put("/v1/series/room-1.temp", json={"params": SMALL}).status_code == 200
    for name in ("b", "a", "c"):
        assert client.put(f"/v1/series/{name}").status_code == 201
    page = client.get("/v1/series", params={"offset": 1, "limit": 2}).json()
    assert page["total"] == 4 and [s["id"] for s in page["items"]] == ["b", "c"]
    assert client.delete("/v1/series/b").status_code == 204
    assert client.get("/v1/series/b").status_code == 404
    assert client.delete("/v1/series/b").status_code == 404
    assert [s["id"] for s in client.get("/v1/series").json()["items"]] == ["a", "c", "room-1.temp"]


def test_first_push_creates_a_series_with_the_model_defaults(client):
    response = client.post("/v1/series/fresh/observations", json=batch(wave(5)))
    assert response.status_code == 200
    assert response.json() == {"accepted": 5, "duplicates": 0, "last_t": 4.0, "n_observations": 5}
    info = client.get("/v1/series/fresh").json()
    expected = EpisodicKoopman.from_flat(Settings().model_defaults).to_flat()
    assert info["params"] == json.loads(json.dumps(expected))
    assert info["n_observations"] == 5 and info["applied"] == 5 and info["last_t"] == 4.0


def test_forecast_equals_the_library_and_explains_itself(client):
    values = wave(300)
    client.put("/v1/series/s", json={"params": SMALL})
    for start in range(0, 300, 100):
        assert (
            client.post(
                "/v1/series/s/observations", json=batch(values[start : start + 100], start)
            ).status_code
            == 200
        )
    served = client.get("/v1/series/s/forecast", params={"horizon": 12, "level": 0.8}).json()
    assert_same_forecast(served, reference_forecast(SMALL, values, 12, 0.8))
    assert served["n_observations"] == 300 and served["last_t"] == 299.0
    assert served["horizon"] == 12 and served["level"] == 0.8 and not served["fallback"]
    assert served["timestamps"] == [300.0 + h for h in range(12)]  # regular spacing
    assert len(served["mean"]) == 12
    assert all(
        lo <= m <= hi
        for lo, m, hi in zip(served["lower"], served["mean"], served["upper"], strict=True)
    )
    assert served["recall_applied"] and served["recalled"]
    for episode in served["recalled"]:
        start, origin, end = episode["span"]
        assert start == float(episode["window_start"]) and origin == float(episode["origin"])
        assert end == origin + SMALL["episode_horizon"]
        assert episode["distance"] >= 0 and 0 < episode["weight"] <= 1
    assert math.isclose(sum(e["weight"] for e in served["recalled"]), 1.0)
    periods = [row["period"] for row in served["spectrum"] if row["period"]]
    assert any(abs(p - 12.0) < 1.0 for p in periods)  # the dominant cycle of wave()


def test_forecast_before_any_data_has_no_nan(client):
    client.put("/v1/series/empty")
    raw = client.get("/v1/series/empty/forecast", params={"horizon": 3})
    assert raw.status_code == 200 and "NaN" not in raw.text
    body = raw.json()
    assert body["fallback"] and body["mean"] == [0.0, 0.0, 0.0] and body["lower"] == [None] * 3
    assert body["last_t"] is None and body["timestamps"] is None


def test_iso_timestamps_and_regular_spacing(client):
    values = wave(60)
    body = {
        "observations": [
            {"t": f"2011-01-0{1 + i // 24}T{i % 24:02d}:00:00+01:00", "y": float(v)}
            for i, v in enumerate(values[:48])
        ]
    }
    assert client.post("/v1/series/hourly/observations", json=body).status_code == 200
    f = client.get("/v1/series/hourly/forecast", params={"horizon": 3}).json()
    assert f["last_t"] == "2011-01-02T23:00:00+01:00"
    assert f["timestamps"] == [
        "2011-01-03T00:00:00+01:00",
        "2011-01-03T01:00:00+01:00",
        "2011-01-03T02:00:00+01:00",
    ]
    assert client.get("/v1/series/hourly").json()["spacing"] == 3600.0
    # A gap makes the spacing irregular until enough regular steps follow it.
    gap = {"observations": [{"t": "2011-01-03T05:00:00+01:00", "y": 0.5}]}
    client.post("/v1/series/hourly/observations", json=gap)
    assert (
        client.get("/v1/series/hourly/forecast", params={"horizon": 2}).json()["timestamps"] is None
    )


def test_channels(client):
    rng = np.random.default_rng(1)
    rows = [{"temp": float(20 + np.sin(i / 3)), "load": float(rng.normal())} for i in range(120)]
    body = {"observations": [{"t": i, "y": y} for i, y in enumerate(rows)]}
    client.put("/v1/series/multi", json={"params": SMALL})
    assert client.post("/v1/series/multi/observations", json=body).status_code == 200
    served = client.get("/v1/series/multi/forecast", params={"horizon": 4}).json()
    assert served["channels"] == ["temp", "load"] and set(served["mean"]) == {"temp", "load"}
    assert_same_forecast(served, reference_forecast(SMALL, rows, 4))
    stored = client.get("/v1/series/multi/observations", params={"limit": 3}).json()
    assert [o["y"] for o in stored["items"]] == rows[:3]  # channel dicts round-trip exactly


def test_stored_observations_round_trip_exactly(client):
    values = wave(250)
    client.post("/v1/series/exact/observations", json=batch(values))
    page = client.get("/v1/series/exact/observations", params={"offset": 100, "limit": 200}).json()
    assert page["total"] == 250 and len(page["items"]) == 150
    assert [o["seq"] for o in page["items"]] == list(range(100, 250))
    assert [o["y"] for o in page["items"]] == values[100:].tolist()
    assert [o["t"] for o in page["items"]] == [float(t) for t in range(100, 250)]


def test_ndjson_stream_equals_json(client):
    values = wave(400)
    lines = [json.dumps({"t": i, "y": float(v)}) + "\n" for i, v in enumerate(values)]

    def chunks():  # split lines across chunk boundaries, as a streaming client would
        text = "".join(lines).encode()
        for i in range(0, len(text), 777):
            yield text[i : i + 777]

    response = client.post(
        "/v1/series/nd/observations",
        content=chunks(),
        headers={"content-type": "application/x-ndjson"},
    )
    assert response.status_code == 200 and response.json()["accepted"] == 400
    client.post("/v1/series/js/observations", json=batch(values))
    nd = client.get("/v1/series/nd/forecast").json()
    js = client.get("/v1/series/js/forecast").json()
    assert_same_forecast(nd, js)


def test_episodes_browse_memory(client):
    client.put("/v1/series/mem", json={"params": SMALL})
    client.post("/v1/series/mem/observations", json=batch(wave(200)))
    info = client.get("/v1/series/mem").json()
    assert info["memory_size"] > 10 and info["is_fitted"] and info["spectrum"]
    page = client.get("/v1/series/mem/episodes", params={"offset": 2, "limit": 5}).json()
    assert page["total"] == info["memory_size"] and len(page["items"]) == 5
    first = page["items"][0]
    assert {
        "id",
        "origin",
        "window_start",
        "span",
        "rank",
        "frequencies",
        "growth_rates",
        "forecast",
        "realised",
        "mae",
    } <= set(first)
    assert len(first["realised"]) == SMALL["episode_horizon"]
    assert first["forecast"] is None and first["mae"] is None  # kept for the residual expert only
    ids = [e["id"] for e in page["items"]]
    assert ids == sorted(ids)


def test_reconfiguring_rebuilds_the_model_by_replay(client):
    values = wave(200)
    client.put("/v1/series/re", json={"params": SMALL})
    client.post("/v1/series/re/observations", json=batch(values))
    other = {**SMALL, "strategy": "residual", "delays": 6}
    response = client.put("/v1/series/re", json={"params": other})
    assert response.status_code == 200 and response.json()["applied"] == 200
    served = client.get("/v1/series/re/forecast", params={"horizon": 6}).json()
    assert_same_forecast(served, reference_forecast(other, values, 6))


def test_a_series_without_observations_answers_every_read(client):
    client.put("/v1/series/new")
    assert client.get("/v1/series/new/episodes").json()["items"] == []
    info = client.get("/v1/series/new").json()
    assert info["memory_size"] == 0 and info["spectrum"] == [] and not info["is_fitted"]
    assert client.get("/v1/series/new/observations").json()["items"] == []


def test_unknown_series_is_404(client):
    for path in ("", "/forecast", "/episodes", "/observations", "/forecast/stream"):
        response = client.get(f"/v1/series/nope{path}")
        assert response.status_code == 404, path
        assert "nope" in response.json()["detail"]


def test_metrics_count_requests_ingest_and_recalls(client):
    client.put("/v1/series/m", json={"params": SMALL})
    client.post("/v1/series/m/observations", json=batch(wave(150)))
    client.get("/v1/series/m/forecast")
    text = client.get("/metrics").text
    pushes = 'method="POST",route="/v1/series/{series_id}/observations",status="200"'
    assert f"episodic_koopman_http_requests_total{{{pushes}}} 1.0" in text
    assert "episodic_koopman_observations_ingested_total 150.0" in text
    forecasts = 'method="GET",route="/v1/series/{series_id}/forecast"'
    assert f"episodic_koopman_http_request_duration_seconds_count{{{forecasts}}} 1.0" in text
    recalls = [
        line for line in text.splitlines() if line.startswith("episodic_koopman_recalls_total")
    ]
    assert recalls and float(recalls[0].split()[-1]) >= 1.0
    assert "episodic_koopman_series 1.0" in text


def test_applied_counts_this_process_acknowledgements_and_replays_apart(make_client):
    """ingested - applied = backlog; rebuilding from storage counts as replayed, not applied."""
    client = make_client()
    client.put("/v1/series/m", json={"params": SMALL})
    client.post("/v1/series/m/observations", json=batch(wave(150)))
    client.get("/v1/series/m/forecast")  # read-your-writes: everything is applied
    text = client.get("/metrics").text
    assert metric(text, "episodic_koopman_observations_ingested_total") == 150
    assert metric(text, "episodic_koopman_observations_applied_total") == 150
    assert metric(text, "episodic_koopman_observations_replayed_total") == 0
    client.put("/v1/series/m", json={"params": {**SMALL, "window": 40}})  # rebuilt by replay
    text = client.get("/metrics").text
    assert metric(text, "episodic_koopman_observations_applied_total") == 150
    assert metric(text, "episodic_koopman_observations_replayed_total") == 150
    client.__exit__(None, None, None)
    restarted = make_client(snapshot_every=10**6)
    restarted.get("/v1/series/m/forecast")
    text = restarted.get("/metrics").text
    # A new process: its counters start at 0 and the snapshot spared any replay.
    assert metric(text, "episodic_koopman_observations_ingested_total") == 0
    assert metric(text, "episodic_koopman_observations_applied_total") == 0
    assert metric(text, "episodic_koopman_observations_replayed_total") == 0


def test_model_defaults_apply_to_new_series_under_their_own_params(make_client):
    client = make_client(model_defaults={"capacity": 123, "episode_horizon": 12})
    info = client.put("/v1/series/a", json={"params": {"episode_horizon": 6}}).json()
    assert info["params"]["capacity"] == 123 and info["params"]["episode_horizon"] == 6
    client.post("/v1/series/b/observations", json={"observations": [{"t": 0, "y": 1.0}]})
    assert client.get("/v1/series/b").json()["params"]["capacity"] == 123


def test_invalid_model_defaults_stop_the_server_at_start(make_client):
    with pytest.raises(RuntimeError, match="MODEL_DEFAULTS"):
        make_client(model_defaults={"capacity": 0})
