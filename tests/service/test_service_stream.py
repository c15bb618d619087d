"""SSE forecast streams and concurrency, against a real uvicorn server in a thread.

On both engines: the tests see the server through HTTP only (open streams through
``/metrics``, which sums the shard actors' under Ray).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from service_helpers import (
    SMALL,
    assert_same_forecast,
    batch,
    hold_learning,
    metric,
    reference_forecast,
    wait_for,
    wave,
)

pytestmark = pytest.mark.both_engines


def open_streams(client: httpx.Client) -> float:
    """The server's open SSE subscriptions (where the models live)."""
    return metric(client.get("/metrics").text, "episodic_koopman_sse_streams")


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    """(event, data) pairs from an SSE line stream; comments come as ("comment", text)."""
    event, data = "message", []
    for line in lines:
        if line.startswith(":"):
            yield "comment", line[1:].strip()
        elif line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "" and data:
            yield event, json.loads("\n".join(data))
            event, data = "message", []


def next_event(events: Iterator[tuple[str, Any]], kind: str = "forecast") -> Any:
    for event, data in events:
        if event == kind:
            return data
    raise AssertionError(f"stream ended before a {kind} event")


def test_a_forecast_event_follows_every_accepted_batch(live_server):
    server = live_server()
    values = wave(300)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        client.put("/v1/series/s", json={"params": SMALL})
        client.post("/v1/series/s/observations", json=batch(values[:100]))
        with client.stream("GET", "/v1/series/s/forecast/stream", params={"horizon": 6}) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = sse_events(stream.iter_lines())
            assert next_event(events)["n_observations"] == 100  # the current forecast first
            for start in (100, 200):
                assert (
                    client.post(
                        "/v1/series/s/observations", json=batch(values[start : start + 50], start)
                    ).status_code
                    == 200
                )
                assert (
                    client.post(
                        "/v1/series/s/observations",
                        json=batch(values[start + 50 : start + 100], start + 50),
                    ).status_code
                    == 200
                )
            # A duplicate-only push is not an accepted batch: no event.
            client.post("/v1/series/s/observations", json=batch(values[:10]))
            seen = [next_event(events) for _ in range(4)]
            assert [e["n_observations"] for e in seen] == [150, 200, 250, 300]
            assert_same_forecast(seen[-1], reference_forecast(SMALL, values, 6))
            assert seen[-1]["horizon"] == 6 and seen[-1]["series_id"] == "s"


def test_heartbeats_between_events(live_server):
    server = live_server(heartbeat_seconds=0.1)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        client.put("/v1/series/h")
        with client.stream("GET", "/v1/series/h/forecast/stream") as stream:
            events = sse_events(stream.iter_lines())
            next_event(events)
            assert next_event(events, "comment").startswith("ping")


def test_a_disconnected_client_frees_its_stream(live_server):
    server = live_server()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        client.put("/v1/series/d")
        for _ in range(3):
            with client.stream("GET", "/v1/series/d/forecast/stream") as stream:
                events = sse_events(
                    stream.iter_lines()
                )  # kept alive: dropping it closes the stream
                next_event(events)
                assert open_streams(client) >= 1
        # The subscription (and its stream count) goes with the client.
        assert wait_for(lambda: open_streams(client) == 0)
        # Pushing after the disconnect finds no listener to feed.
        assert client.post("/v1/series/d/observations", json=batch(wave(20))).status_code == 200


def test_deleting_a_series_ends_its_streams(live_server):
    server = live_server()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        client.put("/v1/series/gone")
        with client.stream("GET", "/v1/series/gone/forecast/stream") as stream:
            events = sse_events(stream.iter_lines())
            next_event(events)
            assert client.delete("/v1/series/gone").status_code == 204
            assert next_event(events, "deleted") == {"series_id": "gone"}
        assert wait_for(lambda: open_streams(client) == 0)


def test_stream_limit_is_429(live_server):
    server = live_server(max_streams=1)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        client.put("/v1/series/x")
        with client.stream("GET", "/v1/series/x/forecast/stream") as stream:
            events = sse_events(stream.iter_lines())
            next_event(events)
            assert client.get("/v1/series/x/forecast/stream").status_code == 429


def test_concurrent_pushes_to_one_series_lose_nothing(live_server):
    """Six clients push the same sequence at once (retries, in effect): each t is stored once."""
    server = live_server()
    values = wave(600)
    results: list[dict[str, int]] = []
    failures: list[str] = []

    def pusher(k: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for start in range(0, 600, 50):
                r = client.post(
                    "/v1/series/shared/observations", json=batch(values[start : start + 50], start)
                )
                if r.status_code != 200:
                    failures.append(r.text)
                    return
                results.append(r.json())
            own = wave(200, seed=k)
            r = client.post(f"/v1/series/own-{k}/observations", json=batch(own))
            if r.status_code != 200 or r.json()["accepted"] != 200:
                failures.append(r.text)

    with httpx.Client(base_url=server.url, timeout=60) as client:
        client.put("/v1/series/shared", json={"params": SMALL})
        threads = [threading.Thread(target=pusher, args=(k,)) for k in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failures
        assert sum(r["accepted"] for r in results) == 600
        assert sum(r["duplicates"] for r in results) == 5 * 600
        stored = client.get("/v1/series/shared/observations", params={"limit": 1000}).json()
        assert [o["y"] for o in stored["items"]] == values.tolist()
        served = client.get("/v1/series/shared/forecast", params={"horizon": 8}).json()
        assert_same_forecast(served, reference_forecast(SMALL, values, 8))
        for k in range(6):
            own = client.get(f"/v1/series/own-{k}/forecast", params={"horizon": 3}).json()
            assert_same_forecast(own, reference_forecast({}, wave(200, seed=k), 3))


def test_a_busy_series_does_not_hold_up_reads_of_others(live_server, monkeypatch, tmp_path):
    """While the apply worker is inside the busy series' backlog (held there by a gate, so
    nothing depends on speed), reads of another series and health checks are answered."""
    server = live_server()
    gate = tmp_path / "gate"
    hold_learning(server, "busy", gate, monkeypatch)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            client.post("/v1/series/quiet/observations", json=batch(wave(100)))
            client.get("/v1/series/quiet/forecast")
            busy = client.post("/v1/series/busy/observations", json=batch(wave(4000)))
            assert busy.status_code == 200  # acknowledged once durable, before the model has it
            assert wait_for(lambda: (gate / "inside").exists(), 60)  # the worker is held
            assert client.get("/v1/series/quiet/forecast").status_code == 200
            assert client.get("/healthz").status_code == 200
            (row,) = [i for i in client.get("/v1/overview").json()["items"] if i["id"] == "busy"]
            assert row["applied"] < row["n_observations"] == 4000  # a peek does not wait
            (gate / "release").touch()
            # Read-your-writes: a read of the busy series waits for its backlog.
            assert client.get("/v1/series/busy/forecast").json()["n_observations"] == 4000
    finally:
        (gate / "release").touch()
