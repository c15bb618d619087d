"""Durability: snapshots plus replay restore the exact state, including after a real SIGKILL."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from service_helpers import (
    SMALL,
    assert_same_forecast,
    batch,
    corrupt_snapshots,
    free_port,
    metric,
    reference_forecast,
    serve_command,
    stored_snapshots,
    wait_until_ready,
    wave,
)

from service.settings import Settings
from service.storage import open_storage

# Snapshots and replay restore the same state whichever database holds the observations.
pytestmark = pytest.mark.both_backends


def ingest_with_snapshots_then_a_tail(client, values: np.ndarray, tail_from: int) -> dict[str, int]:
    """Push ``values`` to series ``s`` in pushes of 70, the apply path requesting snapshots as
    the settings say until ``tail_from``; then stop the snapshot writer and push the rest,
    so that the tail is in no snapshot whatever the writer's timing. Returns the stored
    snapshots (incarnation -> seq)."""
    registry = client.app.state.service.registry
    client.put("/v1/series/s", json={"params": SMALL})
    for start in range(0, tail_from, 70):
        end = min(start + 70, tail_from)
        client.post("/v1/series/s/observations", json=batch(values[start:end], start))
    client.get("/v1/series/s/forecast")  # read-your-writes: all applied
    # Snapshots are written by their own thread: wait for the ones requested so far.
    assert registry.wait_for_snapshots(60)
    stored = stored_snapshots(client.app.state.service.settings)
    registry.snapshot_writer.close(60)  # later requests are refused
    for start in range(tail_from, len(values), 70):
        end = min(start + 70, len(values))
        client.post("/v1/series/s/observations", json=batch(values[start:end], start))
    return stored


def test_snapshot_then_replay_gives_the_identical_forecast(make_client, make_settings):
    values = wave(700)
    # Snapshot every 200 observations; none at shutdown, so a restart must replay the tail.
    first = make_client(snapshot_every=200, shutdown_snapshot_seconds=0)
    (seq,) = ingest_with_snapshots_then_a_tail(first, values, tail_from=630).values()
    before = first.get("/v1/series/s/forecast", params={"horizon": 10}).json()
    assert 0 < seq <= 630  # older ones were replaced; a restart replays the tail
    first.__exit__(None, None, None)

    second = make_client(snapshot_every=200)
    after = second.get("/v1/series/s/forecast", params={"horizon": 10}).json()
    assert_same_forecast(after, before)
    assert_same_forecast(after, reference_forecast(SMALL, values, 10))
    assert after["n_observations"] == 700 and after["last_t"] == 699.0
    # Learning continues identically after the restart.
    second.post("/v1/series/s/observations", json=batch(wave(50, start=700), 700))
    more = second.get("/v1/series/s/forecast", params={"horizon": 10}).json()
    assert_same_forecast(
        more, reference_forecast(SMALL, np.concatenate([values, wave(50, start=700)]), 10)
    )


def test_shutdown_snapshots_and_restart_needs_no_replay(make_client, make_settings):
    values = wave(300)
    first = make_client()
    first.put("/v1/series/s", json={"params": SMALL})
    first.post("/v1/series/s/observations", json=batch(values))
    first.__exit__(None, None, None)
    assert list(stored_snapshots(make_settings()).values()) == [300]
    second = make_client()
    text = second.get("/metrics").text
    assert_same_forecast(
        second.get("/v1/series/s/forecast").json(), reference_forecast(SMALL, values, 24)
    )
    assert "episodic_koopman_observations_replayed_total 0.0" in text  # loaded, nothing replayed
    assert "episodic_koopman_observations_applied_total 0.0" in text


def test_unreadable_snapshot_falls_back_to_full_replay(make_client, make_settings):
    values = wave(300)
    first = make_client()
    first.post("/v1/series/s/observations", json=batch(values))
    first.__exit__(None, None, None)
    assert corrupt_snapshots(make_settings()) == 1
    second = make_client()
    assert_same_forecast(
        second.get("/v1/series/s/forecast").json(), reference_forecast({}, values, 24)
    )
    assert stored_snapshots(make_settings()) == {}  # the invalid one was discarded
    replayed = metric(second.get("/metrics").text, "episodic_koopman_observations_replayed_total")
    assert replayed == 300


def test_deleted_and_reconfigured_series_leave_no_snapshots(make_client, make_settings):
    first = make_client()
    first.put("/v1/series/a", json={"params": SMALL})
    first.post("/v1/series/a/observations", json=batch(wave(100)))
    first.post("/v1/series/b/observations", json=batch(wave(100)))
    first.__exit__(None, None, None)
    assert len(stored_snapshots(make_settings())) == 2
    second = make_client()
    second.delete("/v1/series/b")
    second.put("/v1/series/a", json={"params": {**SMALL, "delays": 6}})
    assert stored_snapshots(make_settings()) == {}
    second.__exit__(None, None, None)
    third = make_client()
    assert [s["id"] for s in third.get("/v1/series").json()["items"]] == ["a"]
    assert_same_forecast(
        third.get("/v1/series/a/forecast").json(),
        reference_forecast({**SMALL, "delays": 6}, wave(100), 24),
    )


@pytest.mark.parametrize("service_backend", ["postgres"], indirect=True)
def test_a_server_on_a_new_data_dir_restores_from_the_databases_snapshots(
    make_client, make_settings, tmp_path
):
    """Snapshots live in PostgreSQL: a server on another node (an empty data dir) loads
    them and replays only the observations after them."""
    values = wave(700)
    first = make_client(snapshot_every=200, shutdown_snapshot_seconds=0)
    (seq,) = ingest_with_snapshots_then_a_tail(first, values, tail_from=630).values()
    first.get("/v1/series/s/forecast")
    first.__exit__(None, None, None)
    assert list(stored_snapshots(make_settings()).values()) == [seq]  # none at shutdown
    assert 0 < seq <= 630
    assert not list((make_settings().snapshot_dir).glob("*"))  # no files at all

    elsewhere = tmp_path / "another-node"
    second = make_client(data_dir=elsewhere, snapshot_every=10**6)
    after = second.get("/v1/series/s/forecast", params={"horizon": 10}).json()
    assert_same_forecast(after, reference_forecast(SMALL, values, 10))
    assert after["n_observations"] == 700
    text = second.get("/metrics").text
    assert metric(text, "episodic_koopman_observations_replayed_total") == 700 - seq
    assert not (elsewhere / "snapshots").exists() or not list((elsewhere / "snapshots").iterdir())


@pytest.mark.parametrize("service_backend", ["postgres"], indirect=True)
def test_a_fenced_off_server_cannot_write_a_snapshot(make_client, make_settings):
    client = make_client()
    registry = client.app.state.service.registry
    client.put("/v1/series/s", json={"params": SMALL})
    client.post("/v1/series/s/observations", json=batch(wave(120)))
    client.get("/v1/series/s/forecast")
    storage = open_storage(make_settings())
    storage.initialise()
    storage.acquire_shards("a newer server")  # fences this one off every shard
    assert registry.snapshot_dirty() == 1
    assert registry.wait_for_snapshots(30)
    assert registry.snapshot_writer.written == 0
    assert registry.catalog["s"].snapshot_seq == 0
    assert stored_snapshots(make_settings()) == {}


@pytest.mark.parametrize("service_backend", ["sqlite"], indirect=True)
def test_one_server_per_data_dir(make_client):
    make_client()
    with pytest.raises(RuntimeError, match="another server"):
        make_client()


@pytest.mark.parametrize("service_backend", ["postgres"], indirect=True)
def test_a_second_server_on_a_shared_database_fences_the_first(make_client):
    """PostgreSQL has no data-dir lock: the newer server takes every shard, the older is refused."""
    first = make_client()
    assert first.post("/v1/series/s/observations", json=batch(wave(10))).status_code == 200
    second = make_client()
    refused = first.post("/v1/series/s/observations", json=batch(wave(5, start=10), 10))
    assert refused.status_code == 503 and "no longer owns shard" in refused.json()["detail"]
    assert first.put("/v1/series/other").status_code == 503  # every shard moved
    page = second.get("/v1/series/s/observations", params={"limit": 100}).json()
    assert page["total"] == 10 and len(page["items"]) == 10  # the refused push wrote nothing
    more = second.post("/v1/series/s/observations", json=batch(wave(5, start=10), 10))
    assert more.status_code == 200 and more.json()["n_observations"] == 15


def stored_observations(data_dir: Path, database: str) -> dict[str, list[tuple[float, float]]]:
    """Every stored (t, y) per series, read back through the storage after the crash."""
    storage = open_storage(Settings(data_dir=data_dir, database=database))
    storage.initialise()
    reader = storage.reader()
    out: dict[str, list[tuple[float, float]]] = {}
    try:
        for series_id, record in storage.load_records().items():
            out[series_id] = [
                (t, float(np.frombuffer(y, dtype=np.float64)[0]))
                for _, t, y in reader.page(record.sid, 0, 10**9)
            ]
    finally:
        reader.close()
    return out


def kill_when(
    enough: threading.Event,
    process: subprocess.Popen,
    stop: threading.Event,
    threads: list[threading.Thread],
    timeout: float,
) -> None:
    """Start the clients, SIGKILL the server once they got far enough, then stop them."""
    try:
        for thread in threads:
            thread.start()
        assert enough.wait(timeout=timeout), "pushers did not get far enough"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@contextlib.contextmanager
def restarted_server(port: int, data_dir: Path, database_url: str) -> Iterator[str]:
    """The server started again on the same data; stopped gracefully (SIGTERM) after."""
    process = subprocess.Popen(serve_command(port, data_dir, database_url))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process=process)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_sigkill_mid_stream_loses_no_acknowledged_observation(tmp_path, database_url):
    """A real crash: uvicorn in a subprocess, concurrent pushers, SIGKILL, restart, compare."""
    data_dir = tmp_path / "var"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "EPISODIC_KOOPMAN_SNAPSHOT_EVERY": "150"}  # snapshots mid-stream too
    process = subprocess.Popen(serve_command(port, data_dir, database_url), env=env)
    try:
        wait_until_ready(url, process=process)
        series_ids = [f"crash-{k}" for k in range(4)]
        with httpx.Client(base_url=url, timeout=30) as client:
            for series_id in series_ids:
                assert (
                    client.put(f"/v1/series/{series_id}", json={"params": SMALL}).status_code == 201
                )
        acknowledged: dict[str, dict[float, float]] = {s: {} for s in series_ids}
        lock = threading.Lock()
        stop = threading.Event()
        enough = threading.Event()
        counts = [0]

        def pusher(series_id: str, seed: int) -> None:
            values = wave(100_000, seed=seed)
            rng = random.Random(seed)
            with httpx.Client(base_url=url, timeout=30) as client:
                start = 0
                while not stop.is_set() and start < len(values):
                    size = rng.randint(1, 40)
                    body = batch(values[start : start + size], start)
                    try:
                        response = client.post(f"/v1/series/{series_id}/observations", json=body)
                    except httpx.HTTPError:
                        return  # the server died mid-request: this batch was not acknowledged
                    assert response.status_code == 200, response.text
                    with lock:
                        for o in body["observations"]:
                            acknowledged[series_id][float(o["t"])] = o["y"]
                        counts[0] += size
                        if counts[0] >= 1500:
                            enough.set()
                    start += size

        # Two pushers share crash-0 (the same values: concurrent retries of one stream).
        plan = [
            (series_ids[0], 0),
            (series_ids[0], 0),
            (series_ids[1], 1),
            (series_ids[2], 2),
            (series_ids[3], 3),
        ]
        threads = [threading.Thread(target=pusher, args=args) for args in plan]
    except BaseException:
        process.kill()
        process.wait()
        raise
    kill_when(enough, process, stop, threads, timeout=120)

    stored = stored_observations(data_dir, database_url)
    for series_id in series_ids:
        kept = dict(stored.get(series_id, []))
        for t, y in acknowledged[series_id].items():
            assert kept.get(t) == y, f"{series_id}: acknowledged t={t} was lost"
        times = [t for t, _ in stored[series_id]]
        assert times == sorted(set(times)) and times == [float(i) for i in range(len(times))]

    with restarted_server(port, data_dir, database_url) as url:
        with httpx.Client(base_url=url, timeout=120) as client:
            for series_id in series_ids:
                values = np.array([y for _, y in stored[series_id]])
                served = client.get(
                    f"/v1/series/{series_id}/forecast", params={"horizon": 12}
                ).json()
                assert served["n_observations"] == len(values)
                assert_same_forecast(served, reference_forecast(SMALL, values, 12))
    # SIGTERM stops gracefully: every model is snapshotted at its full length.
    settings = Settings(data_dir=data_dir, database=database_url)
    seqs = sorted(stored_snapshots(settings).values())
    assert seqs == sorted(len(stored[series_id]) for series_id in series_ids)


def test_many_series_killed_and_restarted_forecast_like_fresh_models(tmp_path, database_url):
    """A server with many series, read in every way while it ingests, is SIGKILLed and
    restarted. Every series' forecast, read after its info and episodes as a dashboard
    would, equals a fresh model's fed the stored rows."""
    data_dir = tmp_path / "var"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "EPISODIC_KOOPMAN_SNAPSHOT_EVERY": "120"}
    series_ids = [f"m{k:02d}" for k in range(16)]
    process = subprocess.Popen(serve_command(port, data_dir, database_url), env=env)
    try:
        wait_until_ready(url, process=process)
        with httpx.Client(base_url=url, timeout=60) as client:
            for series_id in series_ids:
                client.put(f"/v1/series/{series_id}", json={"params": SMALL})
        stop, enough = threading.Event(), threading.Event()
        pushed = [0]
        lock = threading.Lock()

        def pusher(owned: list[str]) -> None:
            rng = random.Random(owned[0])
            streams = {s: wave(5000, seed=int(s[1:])) * (1 + int(s[1:])) for s in owned}
            starts = dict.fromkeys(owned, 0)
            with httpx.Client(base_url=url, timeout=60) as client:
                while not stop.is_set():
                    series_id = rng.choice(owned)
                    start, size = starts[series_id], rng.randint(5, 60)
                    body = batch(streams[series_id][start : start + size], start)
                    try:
                        response = client.post(f"/v1/series/{series_id}/observations", json=body)
                    except httpx.HTTPError:
                        return
                    assert response.status_code == 200, response.text
                    starts[series_id] += size
                    with lock:
                        pushed[0] += size
                        if pushed[0] >= 6000:
                            enough.set()

        def reader() -> None:
            rng = random.Random(7)
            with httpx.Client(base_url=url, timeout=60) as client:
                while not stop.is_set():
                    series_id = rng.choice(series_ids)
                    path = rng.choice(["", "/episodes", "/forecast"])
                    try:
                        client.get(f"/v1/series/{series_id}{path}")
                    except httpx.HTTPError:
                        return

        threads = [threading.Thread(target=pusher, args=(series_ids[k::4],)) for k in range(4)] + [
            threading.Thread(target=reader)
        ]
    except BaseException:
        process.kill()
        process.wait()
        raise
    kill_when(enough, process, stop, threads, timeout=300)

    stored = stored_observations(data_dir, database_url)
    with restarted_server(port, data_dir, database_url) as url:
        with httpx.Client(base_url=url, timeout=120) as client:
            for series_id in series_ids:
                values = np.array([y for _, y in stored[series_id]])
                more = wave(5000, seed=int(series_id[1:])) * (1 + int(series_id[1:]))
                for step in range(4):  # a few more observations, read after each
                    if step:
                        values = np.append(values, more[len(values)])
                        client.post(
                            f"/v1/series/{series_id}/observations",
                            json=batch(values[-1:], len(values) - 1),
                        )
                    info = client.get(f"/v1/series/{series_id}").json()
                    client.get(f"/v1/series/{series_id}/episodes")
                    served = client.get(
                        f"/v1/series/{series_id}/forecast", params={"horizon": 12}
                    ).json()
                    assert info["n_observations"] == served["n_observations"] == len(values)
                    assert_same_forecast(served, reference_forecast(SMALL, values, 12))
            # A young series beside them, read the same way after every observation: its
            # memory is small, so each newly filed episode changes what is recalled.
            young = wave(70, seed=99)
            client.put("/v1/series/young", json={"params": SMALL})
            for n in range(1, len(young) + 1):
                client.post("/v1/series/young/observations", json=batch(young[n - 1 : n], n - 1))
                if n >= 40:
                    client.get("/v1/series/young")
                    served = client.get("/v1/series/young/forecast", params={"horizon": 12})
                    assert_same_forecast(served.json(), reference_forecast(SMALL, young[:n], 12))
