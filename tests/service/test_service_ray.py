"""The Ray engine: shard actors on a local Ray (2 CPUs) over a real PostgreSQL, no mocks.

Ray starts once per session (`ray_cluster`); each test has its own actors (a fresh
namespace) and its own schema. Without Ray or the PostgreSQL binaries they skip.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from pydantic import ValidationError
from service_helpers import (
    SMALL,
    LiveServer,
    assert_same_forecast,
    batch,
    reference_forecast,
    wave,
)

from service.main import create_app
from service.ray_engine import actor_of, owned_shards
from service.settings import MAX_SHARD_ACTORS, Settings
from service.storage import open_storage

N_SHARDS = 64  # a new database's storage shards
N_ACTORS = 2
CHUNK = 25  # observations per push
TOTAL = 400  # observations per series


def ray_settings(tmp_path: Path, database: str, **overrides: Any) -> Settings:
    return Settings(
        data_dir=tmp_path / "var",
        database=database,
        engine="ray",
        shards=N_ACTORS,
        ray_namespace=f"t-{uuid.uuid4().hex[:12]}",
        snapshot_interval_seconds=3600.0,
        snapshot_every=150,  # so that restoration uses snapshots and replays the rest
        heartbeat_seconds=0.2,
        read_your_writes_timeout=60.0,
        **overrides,
    )


def series_ids() -> list[str]:
    """Three series per actor."""
    ids: dict[int, list[str]] = {0: [], 1: []}
    k = 0
    while min(len(v) for v in ids.values()) < 3:
        sid = f"s{k}"
        owner = actor_of(sid, N_ACTORS, N_SHARDS)
        if len(ids[owner]) < 3:
            ids[owner].append(sid)
        k += 1
    return ids[0] + ids[1]


def values_of(series_id: str) -> np.ndarray:
    return wave(TOTAL, seed=int(series_id[1:])) * (1 + int(series_id[1:]) % 3)


def push_until_acknowledged(
    client: httpx.Client, series_id: str, body: dict[str, Any], stop: threading.Event
) -> dict[str, Any]:
    """Re-send a push until it is acknowledged (503 while a shard restarts; idempotent)."""
    while not stop.is_set():
        try:
            response = client.post(f"/v1/series/{series_id}/observations", json=body)
        except httpx.HTTPError:
            continue
        if response.status_code == 200:
            return response.json()
        assert response.status_code == 503, response.text
        stop.wait(0.05)  # back off while Ray restarts the actor (a retry, not a wait-for)
    raise RuntimeError("stopped")


def test_killed_shard_actor_loses_no_acknowledged_observation(tmp_path, postgres_url, ray_cluster):
    import ray

    ids = series_ids()
    settings = ray_settings(tmp_path, postgres_url)
    storage = open_storage(settings)
    with LiveServer(settings) as server:
        engine = server.app.state.service.engine
        victim = engine.actors[0]
        old_pid = ray.get(victim.pid.remote())
        epochs_before = {s: e for s, (_, e) in storage.owners().items()}
        with httpx.Client(base_url=server.url, timeout=120) as client:
            for sid in ids:
                assert client.put(f"/v1/series/{sid}", json={"params": SMALL}).status_code == 201
            acknowledged: dict[str, int] = dict.fromkeys(ids, 0)
            halfway = threading.Event()
            stop = threading.Event()
            errors: list[BaseException] = []

            def pusher(mine: list[str]) -> None:
                try:
                    for start in range(0, TOTAL, CHUNK):
                        for sid in mine:
                            chunk = values_of(sid)[start : start + CHUNK]
                            result = push_until_acknowledged(
                                client, sid, batch(chunk, start=start), stop
                            )
                            assert result["n_observations"] == start + len(chunk)
                            acknowledged[sid] = result["n_observations"]
                        if start >= TOTAL // 3:
                            halfway.set()
                except BaseException as exc:
                    errors.append(exc)
                    halfway.set()

            threads = [threading.Thread(target=pusher, args=(ids[k::2],)) for k in range(2)]
            for thread in threads:
                thread.start()
            try:
                assert halfway.wait(timeout=300), "the pushers did not get going"
                os.kill(old_pid, signal.SIGKILL)  # mid-ingest: both pushers are running
                for thread in threads:
                    thread.join(timeout=600)
            finally:
                stop.set()
            assert not errors, errors
            assert all(n == TOTAL for n in acknowledged.values()), acknowledged

            # Ray restarted the actor in a new process, which took its shards again.
            assert ray.get(victim.pid.remote()) != old_pid
            epochs_after = {s: e for s, (_, e) in storage.owners().items()}
            for shard in owned_shards(0, N_ACTORS, N_SHARDS):
                assert epochs_after[shard] > epochs_before[shard]
            for shard in owned_shards(1, N_ACTORS, N_SHARDS):
                assert epochs_after[shard] == epochs_before[shard]

            for sid in ids:
                expected = values_of(sid)
                stored = client.get(f"/v1/series/{sid}/observations", params={"limit": 1000}).json()
                assert [item["y"] for item in stored["items"]] == expected.tolist()
                served = client.get(f"/v1/series/{sid}/forecast", params={"horizon": 12}).json()
                assert served["n_observations"] == TOTAL
                assert_same_forecast(served, reference_forecast(SMALL, expected, 12))


def test_ray_engine_streams_lists_and_keeps_the_api_rules(tmp_path, postgres_url, ray_cluster):
    settings = ray_settings(tmp_path, postgres_url)
    ids = series_ids()[2:4]  # one series on each actor
    with LiveServer(settings) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        for sid in ids:
            client.put(f"/v1/series/{sid}", json={"params": SMALL})
            assert (
                client.post(f"/v1/series/{sid}/observations", json=batch(wave(40))).json()[
                    "accepted"
                ]
                == 40
            )
        # Idempotency, 409 and 422 are the owning actor's committer's: they change nothing.
        sid = ids[0]
        again = client.post(f"/v1/series/{sid}/observations", json=batch(wave(40)))
        assert again.json() == {
            "accepted": 0,
            "duplicates": 40,
            "last_t": 39.0,
            "n_observations": 40,
        }
        clash = client.post(f"/v1/series/{sid}/observations", json=batch([5.0], start=3))
        assert clash.status_code == 409
        bad = client.post(f"/v1/series/{sid}/observations", json={"observations": [{"t": 40}]})
        assert bad.status_code == 422
        assert client.get(f"/v1/series/{sid}").json()["n_observations"] == 40
        # Lists merge every actor's series, by id.
        listed = client.get("/v1/series", params={"limit": 1}).json()
        assert listed["total"] == 2 and [i["id"] for i in listed["items"]] == [min(ids)]
        for other in ids:  # read-your-writes: each model has applied its 40 now
            assert client.get(f"/v1/series/{other}").json()["applied"] == 40
        overview = client.get("/v1/overview").json()
        assert [i["id"] for i in overview["items"]] == sorted(ids)
        assert all(i["applied"] == 40 for i in overview["items"])
        # SSE: a forecast now, one after the next push, `deleted` when the series goes.
        events = []
        with client.stream("GET", f"/v1/series/{sid}/forecast/stream", params={"horizon": 4}) as r:
            name = None
            for line in r.iter_lines():
                if line.startswith("event:"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and name:
                    events.append((name, json.loads(line.split(":", 1)[1])))
                    if len(events) == 1:
                        client.post(f"/v1/series/{sid}/observations", json=batch(wave(5, 40), 40))
                    elif len(events) == 2:
                        assert client.delete(f"/v1/series/{sid}").status_code == 204
                    else:
                        break
        assert [name for name, _ in events] == ["forecast", "forecast", "deleted"]
        assert [events[0][1]["n_observations"], events[1][1]["n_observations"]] == [40, 45]
        values = np.concatenate([wave(40), wave(5, 40)])
        assert_same_forecast(events[1][1], reference_forecast(SMALL, values, 4))
        assert client.get(f"/v1/series/{sid}").status_code == 404


def test_sqlite_is_refused_for_a_multi_node_ray(tmp_path):
    settings = Settings(data_dir=tmp_path / "var", engine="ray", ray_address="ray-head:6379")
    from fastapi.testclient import TestClient

    with pytest.raises(RuntimeError, match="cannot share a SQLite file"):
        with TestClient(create_app(settings)):
            pass


def ids_on(actor: int, n: int) -> list[str]:
    """``n`` series ids owned by shard actor ``actor`` of `N_ACTORS`."""
    ids = (f"r{k}" for k in range(10_000))
    return [sid for sid in ids if actor_of(sid, N_ACTORS, N_SHARDS) == actor][:n]


@pytest.mark.parametrize("service_engine", ["ray"], indirect=True)
def test_the_series_limit_holds_over_every_shard_actor(make_client):
    """MAX_SERIES bounds the deployment: each of the 2 actors holds its share (here 1)."""
    client = make_client(max_series=2, shards=N_ACTORS)
    first, second = ids_on(0, 2)
    (third,) = ids_on(1, 1)
    assert client.put(f"/v1/series/{first}").status_code == 201
    refused = client.post(f"/v1/series/{second}/observations", json=batch(wave(3)))
    assert refused.status_code == 403  # actor 0's share is taken
    assert "share" in refused.json()["detail"] and "MAX_SERIES" in refused.json()["detail"]
    assert client.post(f"/v1/series/{third}/observations", json=batch(wave(3))).status_code == 200
    for sid in (second, *ids_on(1, 3)[1:]):  # both shares taken: the deployment holds 2
        assert client.put(f"/v1/series/{sid}").status_code == 403
    assert client.get("/v1/series").json()["total"] == 2
    assert client.get(f"/v1/series/{second}").status_code == 404  # the refusals stored nothing
    assert client.delete(f"/v1/series/{first}").status_code == 204
    assert client.put(f"/v1/series/{second}").status_code == 201


@pytest.mark.parametrize("shards", [-1, MAX_SHARD_ACTORS + 1])
def test_the_number_of_shard_actors_is_bounded(tmp_path, shards):
    with pytest.raises(ValidationError, match="shards"):
        Settings(data_dir=tmp_path, engine="ray", shards=shards)


@pytest.mark.parametrize(
    ("shards", "message"),
    [(0, "greater than or equal to 1"), (MAX_SHARD_ACTORS + 1, "less than or equal to 64")],
)
def test_serve_refuses_a_number_of_shards_out_of_range(shards, message):
    from typer.testing import CliRunner

    from episodic_koopman.cli import app

    result = CliRunner(env={"COLUMNS": "200"}).invoke(
        app, ["serve", "--engine", "ray", "--shards", str(shards)]
    )
    assert result.exit_code == 2  # a usage error, before anything starts
    assert "Invalid value for '--shards'" in result.output and message in result.output


def test_by_default_there_is_an_actor_per_cpu_up_to_the_storage_shards(tmp_path, ray_cluster):
    import ray

    from service.ray_engine.engine import start_ray, stop_ray

    settings = Settings(data_dir=tmp_path, engine="ray", ray_namespace=f"t-{uuid.uuid4().hex}")
    cpus = int(ray.cluster_resources()["CPU"])
    for n_shards, expected in ((64, cpus), (1, 1)):
        actors, owned, started = start_ray(settings.model_copy(), n_shards)
        try:
            assert len(actors) == expected
        finally:
            stop_ray(actors, owned, started, timeout=30)
