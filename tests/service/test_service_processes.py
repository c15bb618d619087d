"""The processes engine (`--engine processes`): shard processes, no mocks.

The service contract runs on it too (``both_engines``); these tests cover what is its
own: a killed shard process is replaced without losing an acknowledged observation,
the parent's settings decide the number of children, and a server whose HTTP process
dies takes its children with it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from typing import Any

import httpx
import pytest
from service_helpers import (
    SMALL,
    LiveServer,
    assert_same_forecast,
    batch,
    free_port,
    reference_forecast,
    serve_command,
    wait_for,
    wait_until_ready,
    wave,
)

from service.ray_engine import actor_of, owned_shards
from service.settings import MAX_SHARD_ACTORS, Settings
from service.storage import open_storage

N_SHARDS = 64  # a new database's storage shards
N_HOSTS = 2
CHUNK = 25  # observations per push
TOTAL = 300  # observations per series


def series_ids() -> list[str]:
    """Two series per shard process."""
    ids: dict[int, list[str]] = {0: [], 1: []}
    k = 0
    while min(len(v) for v in ids.values()) < 2:
        sid = f"s{k}"
        owner = actor_of(sid, N_HOSTS, N_SHARDS)
        if len(ids[owner]) < 2:
            ids[owner].append(sid)
        k += 1
    return ids[0] + ids[1]


def values_of(series_id: str) -> Any:
    return wave(TOTAL, seed=int(series_id[1:])) * (1 + int(series_id[1:]) % 3)


def push_until_acknowledged(
    client: httpx.Client, series_id: str, body: dict[str, Any], stop: threading.Event
) -> dict[str, Any]:
    """Re-send a push until it is acknowledged (503 while a shard process restarts)."""
    while not stop.is_set():
        try:
            response = client.post(f"/v1/series/{series_id}/observations", json=body)
        except httpx.HTTPError:
            continue
        if response.status_code == 200:
            return response.json()
        assert response.status_code == 503, response.text
        stop.wait(0.05)  # back off while the process restarts (a retry, not a wait-for)
    raise RuntimeError("stopped")


def test_a_killed_shard_process_is_replaced_and_loses_no_acknowledged_observation(
    make_settings,
):
    ids = series_ids()
    settings = make_settings(engine="processes", processes=N_HOSTS, snapshot_every=100)
    storage = open_storage(settings)
    with LiveServer(settings) as server:
        processes = server.app.state.service.engine.processes
        old_pid = processes.pid(0)
        epochs_before = {s: e for s, (_, e) in storage.owners().items()}
        with httpx.Client(base_url=server.url, timeout=120) as client:
            for sid in ids:
                assert client.put(f"/v1/series/{sid}", json={"params": SMALL}).status_code == 201
            acknowledged = dict.fromkeys(ids, 0)
            halfway, stop = threading.Event(), threading.Event()
            errors: list[BaseException] = []

            def pusher(mine: list[str]) -> None:
                try:
                    for start in range(0, TOTAL, CHUNK):
                        for sid in mine:
                            chunk = values_of(sid)[start : start + CHUNK]
                            body = batch(chunk, start=start)
                            result = push_until_acknowledged(client, sid, body, stop)
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

            # The parent started another process, which took its shards again.
            assert wait_for(lambda: processes.pid(0) not in (None, old_pid), timeout=120)
            epochs_after = {s: e for s, (_, e) in storage.owners().items()}
            for shard in owned_shards(0, N_HOSTS, N_SHARDS):
                assert epochs_after[shard] > epochs_before[shard]
            for shard in owned_shards(1, N_HOSTS, N_SHARDS):
                assert epochs_after[shard] == epochs_before[shard]

            for sid in ids:
                expected = values_of(sid)
                stored = client.get(f"/v1/series/{sid}/observations", params={"limit": 1000}).json()
                assert [item["y"] for item in stored["items"]] == expected.tolist()
                served = client.get(f"/v1/series/{sid}/forecast", params={"horizon": 12}).json()
                assert served["n_observations"] == TOTAL
                assert_same_forecast(served, reference_forecast(SMALL, expected, 12))


_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
#: 0 (the server's own): one CPU to run on; else one child per CPU, up to the shard actors' cap.
_ONE_PER_CPU = min(_CPUS, MAX_SHARD_ACTORS) if _CPUS > 1 else 0


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"engine": "processes", "processes": 3}, 3),
        ({"engine": "processes", "processes": 1}, 0),  # one: the models stay in the server
        ({"engine": "local", "processes": 3}, 0),
        ({"engine": "processes", "processes": 0}, _ONE_PER_CPU),
    ],
)
def test_the_settings_decide_the_shard_processes(tmp_path, overrides, expected):
    assert Settings(data_dir=tmp_path, **overrides).shard_processes == expected


def test_shard_processes_die_with_the_server(tmp_path):
    """A SIGKILLed server leaves no child behind to compete with the next one."""
    port = free_port()
    env = {**os.environ, "EPISODIC_KOOPMAN_PROCESSES": "2", "EPISODIC_KOOPMAN_ENGINE": "processes"}
    process = subprocess.Popen(serve_command(port, tmp_path / "var"), env=env)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", timeout=300, process=process)
        children = _children(process.pid)
        assert len(children) == 2, children
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        assert wait_for(lambda: not any(_alive(pid) for pid in children), timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def _children(pid: int) -> list[int]:
    found = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as handle:
            found += [int(child) for child in handle.read().split()]
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie that its dead parent left to init is gone for our purposes)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
