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
from service.settings import Settings
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
