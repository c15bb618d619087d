"""Ingestion rules: idempotency and 409s, 422s that change nothing, limits, auth."""

from __future__ import annotations

import json
import logging

import pytest
from service_helpers import SMALL, batch, wave

# Idempotency and 409s are the committer's rules; they hold on either storage backend.
pytestmark = pytest.mark.both_backends
#: The README's guarantees (idempotency, 409s and 422s that change nothing, read-your-writes
#: through `state_of`, the body limit, API keys) hold on Ray too: these also run there.
both_engines = pytest.mark.both_engines


def state_of(client, series_id: str) -> tuple:
    """Everything a client can observe of a series (to check that a rejection changed nothing)."""
    info = client.get(f"/v1/series/{series_id}").json()
    forecast = client.get(f"/v1/series/{series_id}/forecast", params={"horizon": 5}).json()
    stored = client.get(f"/v1/series/{series_id}/observations", params={"limit": 1000}).json()
    return info, forecast, stored


@pytest.fixture
def seeded(client):
    client.put("/v1/series/s", json={"params": SMALL})
    assert client.post("/v1/series/s/observations", json=batch(wave(100))).status_code == 200
    return client


@both_engines
def test_identical_resend_is_a_duplicate(seeded):
    before = state_of(seeded, "s")
    again = seeded.post("/v1/series/s/observations", json=batch(wave(100)))
    assert again.status_code == 200
    assert again.json() == {"accepted": 0, "duplicates": 100, "last_t": 99.0, "n_observations": 100}
    assert state_of(seeded, "s") == before


@both_engines
def test_overlapping_resend_accepts_only_the_new_part(seeded):
    values = wave(150)
    response = seeded.post("/v1/series/s/observations", json=batch(values[90:], 90))
    assert response.json() == {
        "accepted": 50,
        "duplicates": 10,
        "last_t": 149.0,
        "n_observations": 150,
    }
    stored = seeded.get("/v1/series/s/observations", params={"limit": 1000}).json()["items"]
    assert [o["y"] for o in stored] == values.tolist()


@both_engines
def test_same_t_different_y_is_409_and_changes_nothing(seeded):
    before = state_of(seeded, "s")
    body = {"observations": [{"t": 100, "y": 1.0}, {"t": 50, "y": 123.0}]}
    response = seeded.post("/v1/series/s/observations", json=body)
    assert response.status_code == 409
    assert (
        "observations[1]" in response.json()["detail"]
        and "different y" in response.json()["detail"]
    )
    assert state_of(seeded, "s") == before  # all-or-nothing: t=100 was not stored either


def test_older_t_never_stored_is_409(seeded):
    before = state_of(seeded, "s")
    response = seeded.post(
        "/v1/series/s/observations", json={"observations": [{"t": 10.5, "y": 0.0}]}
    )
    assert response.status_code == 409
    assert "older than the series' last t=99.0" in response.json()["detail"]
    assert state_of(seeded, "s") == before


def test_out_of_order_within_a_request_is_409(seeded):
    before = state_of(seeded, "s")
    body = {"observations": [{"t": 200, "y": 0.0}, {"t": 150, "y": 0.0}]}
    assert seeded.post("/v1/series/s/observations", json=body).status_code == 409
    assert state_of(seeded, "s") == before


def test_repeated_t_within_a_request(seeded):
    same = {"observations": [{"t": 100, "y": 2.0}, {"t": 100, "y": 2.0}]}
    assert seeded.post("/v1/series/s/observations", json=same).json()["duplicates"] == 1
    clash = {"observations": [{"t": 101, "y": 2.0}, {"t": 101, "y": 3.0}]}
    assert seeded.post("/v1/series/s/observations", json=clash).status_code == 409


JUNK = {
    "not json": (b'{"observations": [', ["body"]),
    "NaN": (b'{"observations": [{"t": 100, "y": NaN}]}', ["body", "observations", 0, "y"]),
    "Infinity": (
        b'{"observations": [{"t": 100, "y": -Infinity}]}',
        ["body", "observations", 0, "y"],
    ),
    "huge": (b'{"observations": [{"t": 100, "y": 1e300}]}', ["body", "observations", 0, "y"]),
    "huge int": (
        b'{"observations": [{"t": 100, "y": 1' + b"0" * 400 + b"}]}",
        ["body", "observations", 0, "y"],
    ),
    "string y": (b'{"observations": [{"t": 100, "y": "1.5"}]}', ["body", "observations", 0, "y"]),
    "bool y": (b'{"observations": [{"t": 100, "y": true}]}', ["body", "observations", 0, "y"]),
    "null y": (b'{"observations": [{"t": 100, "y": null}]}', ["body", "observations", 0, "y"]),
    "list y": (b'{"observations": [{"t": 100, "y": [1, 2]}]}', ["body", "observations", 0, "y"]),
    "dict y": (
        b'{"observations": [{"t": 100, "y": {"a": 1.0}}]}',
        ["body", "observations", 0, "y"],
    ),
    "missing t": (b'{"observations": [{"y": 1.0}]}', ["body", "observations", 0, "t"]),
    "bool t": (b'{"observations": [{"t": false, "y": 1.0}]}', ["body", "observations", 0, "t"]),
    "NaN t": (b'{"observations": [{"t": NaN, "y": 1.0}]}', ["body", "observations", 0, "t"]),
    "bad ISO": (
        b'{"observations": [{"t": "yesterday", "y": 1.0}]}',
        ["body", "observations", 0, "t"],
    ),
    "ISO on numeric series": (
        b'{"observations": [{"t": "2030-01-01T00:00:00", "y": 1.0}]}',
        ["body", "observations", 0, "t"],
    ),
    "mixed kinds": (
        b'{"observations": [{"t": 100, "y": 1.0}, {"t": "2030-01-01", "y": 1.0}]}',
        ["body", "observations", 1, "t"],
    ),
    "extra field": (
        b'{"observations": [{"t": 100, "y": 1.0, "z": 0}]}',
        ["body", "observations", 0, "z"],
    ),
    "not an object": (b'{"observations": [3]}', ["body", "observations", 0]),
    "observations not a list": (b'{"observations": {"t": 1}}', ["body", "observations"]),
    "body not an object": (b"[1, 2]", ["body"]),
    "unknown top-level": (b'{"observations": [], "x": 1}', ["body", "x"]),
    "late bad value": (
        json.dumps(
            {"observations": [{"t": 100 + i, "y": 1.0} for i in range(50)] + [{"t": 150, "y": "x"}]}
        ).encode(),
        ["body", "observations", 50, "y"],
    ),
}


@pytest.mark.parametrize("name", sorted(JUNK))
def test_junk_is_422_naming_the_field_and_changes_nothing(seeded, name):
    raw, loc = JUNK[name]
    before = state_of(seeded, "s")
    response = seeded.post(
        "/v1/series/s/observations", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail[0]["loc"] == loc and detail[0]["msg"]
    assert state_of(seeded, "s") == before


def test_wrong_channels_are_422(client):
    first = {"observations": [{"t": 0, "y": {"a": 1.0, "b": 2.0}}]}
    assert client.post("/v1/series/c/observations", json=first).status_code == 200
    before = state_of(client, "c")
    for y, loc in (
        ({"a": 1.0}, ["body", "observations", 0, "y"]),
        ({"a": 1.0, "b": 2.0, "c": 3.0}, ["body", "observations", 0, "y"]),
        (1.0, ["body", "observations", 0, "y"]),
        ({"a": 1.0, "b": "2"}, ["body", "observations", 0, "y", "b"]),
    ):
        response = client.post(
            "/v1/series/c/observations", json={"observations": [{"t": 1, "y": y}]}
        )
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == loc, y
    assert state_of(client, "c") == before


@both_engines
def test_ndjson_junk_is_422_naming_the_line(seeded):
    before = state_of(seeded, "s")
    lines = b'{"t": 100, "y": 1.0}\n\n{"t": 101, "y": NaN}\n'
    response = seeded.post(
        "/v1/series/s/observations", content=lines, headers={"content-type": "application/x-ndjson"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "observations", 1, "y"]
    assert state_of(seeded, "s") == before


def test_unsupported_media_type_is_415(seeded):
    response = seeded.post(
        "/v1/series/s/observations", content=b"t,y\n1,2", headers={"content-type": "text/csv"}
    )
    assert response.status_code == 415


def test_invalid_params_are_422_naming_the_parameter(client):
    for params, name in (
        ({"delays": 0}, "delays"),
        ({"delays": "8"}, "delays"),
        ({"top_k": 10, "candidates": 5}, "candidates"),
        ({"rank": 2.5}, "rank"),
        ({"strategy": "magic"}, "strategy"),
        ({"window": 10**7}, "window"),
        ({"tau": float("nan")}, "tau"),
    ):
        body = json.dumps({"params": params}).encode()
        response = client.put(
            "/v1/series/p", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, params
        assert name in response.json()["detail"][0]["loc"], (params, response.json())
    assert client.put("/v1/series/p", json={"params": {"nope": 1}}).status_code == 422
    assert client.get("/v1/series/p").status_code == 404


@pytest.mark.parametrize("series_id", ["a b", "x" * 129, "caf\u00e9", "semi;colon", "sl%2Fash"])
def test_bad_series_ids_are_rejected(client, series_id):
    response = client.post(f"/v1/series/{series_id}/observations", json=batch(wave(3)))
    assert response.status_code in (404, 422)
    assert client.get("/v1/series").json()["total"] == 0


def test_longest_valid_series_id(client):
    series_id = "A-z_0.9" * 18 + "ab"
    assert len(series_id) == 128
    assert client.put(f"/v1/series/{series_id}").status_code == 201


@both_engines
def test_body_size_limit_is_413(make_client):
    client = make_client(max_body_bytes=2000)
    big = json.dumps(batch(wave(200))).encode()
    assert (
        client.post(
            "/v1/series/s/observations", content=big, headers={"content-type": "application/json"}
        ).status_code
        == 413
    )

    def chunked():  # no Content-Length: counted while streaming
        for i in range(0, len(big), 500):
            yield big[i : i + 500]

    response = client.post(
        "/v1/series/s/observations", content=chunked(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413 and "MAX_BODY_BYTES" in response.json()["detail"]
    assert client.get("/v1/series").json()["total"] == 0


def test_observation_count_limit_is_413(make_client):
    client = make_client(max_observations_per_request=50)
    assert client.post("/v1/series/s/observations", json=batch(wave(51))).status_code == 413
    lines = "".join(json.dumps({"t": i, "y": 0.0}) + "\n" for i in range(51)).encode()
    response = client.post(
        "/v1/series/s/observations", content=lines, headers={"content-type": "application/x-ndjson"}
    )
    assert response.status_code == 413
    assert client.post("/v1/series/s/observations", json=batch(wave(50))).status_code == 200


def test_horizon_and_page_limits_are_422(make_client):
    client = make_client(max_horizon=48, max_page_size=10)
    client.post("/v1/series/s/observations", json=batch(wave(5)))
    for path, params, name in (
        ("/v1/series/s/forecast", {"horizon": 49}, "horizon"),
        ("/v1/series/s/forecast", {"horizon": 0}, "horizon"),
        ("/v1/series/s/forecast", {"horizon": "two"}, "horizon"),
        ("/v1/series/s/forecast", {"level": 1.5}, "level"),
        ("/v1/series/s/forecast", {"level": "nan"}, "level"),
        ("/v1/series/s/forecast/stream", {"horizon": 49}, "horizon"),
        ("/v1/series", {"limit": 11}, "limit"),
        ("/v1/series/s/episodes", {"offset": -1}, "offset"),
    ):
        response = client.get(path, params=params)
        assert response.status_code == 422, (path, params)
        assert response.json()["detail"][0]["loc"] == ["query", name]
    assert client.get("/v1/series/s/forecast", params={"horizon": 48}).status_code == 200
    spec = client.get("/openapi.json").json()
    horizon = next(
        p
        for p in spec["paths"]["/v1/series/{series_id}/forecast"]["get"]["parameters"]
        if p["name"] == "horizon"
    )
    assert horizon["schema"]["maximum"] == 48  # the configured limit is in the contract


def test_series_limit_is_403(make_client):
    client = make_client(max_series=2)
    assert client.put("/v1/series/a").status_code == 201
    assert client.post("/v1/series/b/observations", json=batch(wave(3))).status_code == 200
    for response in (
        client.put("/v1/series/c"),
        client.post("/v1/series/c/observations", json=batch(wave(3))),
    ):
        assert response.status_code == 403 and "MAX_SERIES" in response.json()["detail"]
    client.delete("/v1/series/a")
    assert client.put("/v1/series/c").status_code == 201


@both_engines
def test_api_keys(make_client, caplog):
    client = make_client(api_keys="k1, second-key")
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/metrics").status_code == 200
    for headers in (
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic k1"},
        {"Authorization": "Bearer k1x"},
    ):
        response = client.get("/v1/series", headers=headers)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        assert (
            client.post(
                "/v1/series/s/observations", json=batch(wave(3)), headers=headers
            ).status_code
            == 401
        )
    for key in ("k1", "second-key"):
        assert (
            client.get("/v1/series", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        )
    assert not any("API_KEY is not set" in r.message for r in caplog.records)


def test_open_server_logs_a_warning(make_client, caplog):
    with caplog.at_level(logging.WARNING, logger="episodic_koopman.service"):
        make_client()
    assert any("EPISODIC_KOOPMAN_API_KEY is not set" in r.message for r in caplog.records)


@pytest.mark.parametrize(
    ("environment", "keys"),
    [
        ({"EPISODIC_KOOPMAN_API_KEY": "env-key"}, ["env-key"]),
        ({"EPISODIC_KOOPMAN_API_KEY": "env-key, other"}, ["env-key", "other"]),
        ({"EPISODIC_KOOPMAN_API_KEYS": "env-key"}, ["env-key"]),  # the former name
        (
            {"EPISODIC_KOOPMAN_API_KEY": "env-key", "EPISODIC_KOOPMAN_API_KEYS": "old"},
            ["env-key", "old"],
        ),
    ],
)
def test_api_keys_from_the_environment(monkeypatch, data_dir, environment, keys):
    from fastapi.testclient import TestClient

    from service.main import create_app

    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("EPISODIC_KOOPMAN_DATA_DIR", str(data_dir))
    with TestClient(create_app()) as client:
        assert client.get("/v1/series").status_code == 401
        for key in keys:
            headers = {"Authorization": f"Bearer {key}"}
            assert client.get("/v1/series", headers=headers).status_code == 200
    assert (data_dir / "observations.sqlite3").exists()


_SERIES_ROUTES = (
    ("PUT", "/v1/series/{id}"),
    ("GET", "/v1/series/{id}"),
    ("DELETE", "/v1/series/{id}"),
    ("POST", "/v1/series/{id}/observations"),
    ("GET", "/v1/series/{id}/observations"),
    ("GET", "/v1/series/{id}/forecast"),
    ("GET", "/v1/series/{id}/forecast/stream"),
    ("GET", "/v1/series/{id}/episodes"),
)


@pytest.mark.parametrize("series_id", [".", "..", "..."])
def test_dot_series_ids_are_422_on_every_route(client, series_id):
    """``.`` and ``..`` are path segments that clients and proxies rewrite: never series ids."""
    encoded = series_id.replace(".", "%2E")  # sent as is, the client would drop the segment
    for method, template in _SERIES_ROUTES:
        body = batch(wave(3)) if method == "POST" else None
        response = client.request(method, template.format(id=encoded), json=body)
        assert response.status_code == 422, (method, template, response.text)
        assert response.json()["detail"][0]["loc"] == ["path", "series_id"]
    assert client.get("/v1/series").json()["total"] == 0
    # Dots inside an id, or leading dots before other characters, stay valid.
    assert client.put("/v1/series/..a.b").status_code == 201


@pytest.mark.parametrize(
    "observations",
    [
        [{"t": i, "y": 0.5 * i} for i in range(5)],
        [{"t": f"2024-03-01T00:0{i}:00+02:00", "y": {"a": 1.0, "b": float(i)}} for i in range(3)],
        [{"t": 1.5, "y": 2}],
        [],
    ],
)
def test_a_parsed_batch_crosses_to_a_shard_process_unchanged(observations):
    """Pushes reach a shard process pickled (as columns): stamps and values survive exactly."""
    import pickle

    from service.ingest import BatchParser, parse_json_body

    raw = json.dumps({"observations": observations}).encode()
    parsed = parse_json_body(raw, BatchParser(100, 1e100, 8))
    copy = pickle.loads(pickle.dumps(parsed))
    assert copy.stamps == parsed.stamps
    assert copy.values == parsed.values
    assert [type(v) for v in copy.values] == [type(v) for v in parsed.values]
