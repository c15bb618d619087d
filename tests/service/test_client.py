"""The Python client and the `replay` command built on it, against real in-process servers."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from service_helpers import (
    SMALL,
    free_port,
    reference_forecast,
    serve_command,
    wait_for,
    wait_until_ready,
    wave,
)
from typer.testing import CliRunner

from episodic_koopman import EpisodicKoopman, Forecast, RecalledEpisode
from episodic_koopman.cli import app
from episodic_koopman.client import Client, ClientError, ServedForecast, ServerUnavailable


def assert_same_as_local(served: ServedForecast, expected: dict) -> None:
    """The client's Forecast carries exactly what a local model's predict() gives."""
    assert served.mean.tolist() == expected["mean"]
    lower = [None if np.isnan(v) else v for v in served.lower.tolist()]
    assert lower == expected["lower"]
    assert served.recall_applied == expected["recall_applied"]
    assert [r.__dict__ for r in served.recalled] == expected["recalled"]


def test_push_and_forecast_round_trip(live_server):
    server = live_server()
    values = wave(200)
    pairs = [(i, float(v)) for i, v in enumerate(values[:120])]
    dicts = [{"t": i, "y": np.float64(v)} for i, v in enumerate(values[120:], start=120)]
    with Client(server.url, batch_size=7) as client:
        client.configure("s", SMALL)
        first = client.push("s", pairs)
        assert (first.sent, first.accepted, first.duplicates) == (120, 120, 0)
        second = client.push("s", iter(dicts))  # any iterable, numpy scalars included
        assert (second.accepted, second.n_observations, second.last_t) == (80, 200, 199.0)
        again = client.push("s", pairs[:30])
        assert (again.accepted, again.duplicates) == (0, 30)  # idempotent on (series, t)
        f = client.forecast("s", horizon=8, level=0.8)
    assert isinstance(f, Forecast) and isinstance(f, ServedForecast)
    assert f.series_id == "s" and f.n_observations == 200 and f.last_t == 199.0
    assert f.timestamps == [200.0 + k for k in range(8)]
    assert f.level == 0.8 and f.channels is None and f.mean.shape == (8,)
    local = EpisodicKoopman.from_flat(SMALL)
    local.learn_many(values)
    expected = local.predict(8, 0.8)
    assert_same_as_local(f, expected.to_dict())
    assert all(isinstance(r, RecalledEpisode) for r in f.recalled)
    assert len(f.recalled_spans) == len(f.recalled)
    # The spectrum is rebuilt from the served rows: its summary is the model's own.
    served_rows, local_rows = f.spectrum.summary(), expected.spectrum.summary()
    assert len(served_rows) == len(local_rows)
    for got, want in zip(served_rows, local_rows, strict=True):
        for name in ("magnitude", "frequency", "growth_rate", "amplitude"):
            assert got[name] == pytest.approx(want[name], rel=1e-9, abs=1e-12), name


def test_channels_and_iso_times(live_server):
    server = live_server()
    a, b = wave(60), wave(60, seed=3)
    rows = [
        (f"2024-05-{10 + h // 24:02d}T{h % 24:02d}:00:00", {"a": float(x), "b": float(y)})
        for h, (x, y) in enumerate(zip(a, b, strict=True))
    ]
    with Client(server.url) as client:
        client.configure("two", SMALL)
        client.push("two", rows)
        f = client.forecast("two", horizon=5)
    assert f.channels == ["a", "b"] and f.mean.shape == (5, 2)
    assert f.timestamps[0] == "2024-05-12T12:00:00"
    local = reference_forecast(SMALL, {"a": a, "b": b}, 5)
    assert f.mean[:, 0].tolist() == local["mean"]["a"]
    assert f.mean[:, 1].tolist() == local["mean"]["b"]


def test_stream_yields_forecasts_until_the_series_is_deleted(live_server):
    server = live_server()
    with Client(server.url) as client:
        client.configure("s", SMALL)
        client.push("s", [(i, float(v)) for i, v in enumerate(wave(40))])
        stream = client.stream("s", horizon=4)
        first = next(stream)
        assert first.n_observations == 40 and first.mean.shape == (4,)
        client.push("s", [(40 + i, float(v)) for i, v in enumerate(wave(10, start=40))])
        assert next(stream).n_observations == 50
        client.delete("s")
        assert list(stream) == []  # the deleted event ends the iterator


def test_series_and_episodes_are_paged_through(live_server):
    server = live_server()
    with Client(server.url, page_size=2) as client:
        for name in ("c", "a", "b", "d", "e"):
            client.configure(name, SMALL)
        assert [s["id"] for s in client.series()] == ["a", "b", "c", "d", "e"]
        client.push("a", [(i, float(v)) for i, v in enumerate(wave(80))])
        episodes = client.episodes("a")
        assert episodes and [e["id"] for e in episodes] == sorted(e["id"] for e in episodes)
        assert len(episodes) == client.info("a")["memory_size"]


def test_api_key_from_argument_or_environment(live_server, monkeypatch):
    server = live_server(api_keys="k1,k2")
    with Client(server.url) as anonymous, pytest.raises(ClientError) as caught:
        anonymous.series()
    assert caught.value.status == 401
    with Client(server.url, api_key="k2") as client:
        assert client.series() == []
    monkeypatch.setenv("EPISODIC_KOOPMAN_API_KEY", "k1,k2")  # the server's form: a list
    with Client(server.url) as client:
        assert client.series() == []


def test_http_errors_are_not_retried_and_name_the_problem(live_server):
    server = live_server()
    with Client(server.url, retries=3) as client:
        client.push("s", [(5, 1.0)])
        with pytest.raises(ClientError) as caught:
            client.push("s", [(6, 2.0), (4, 1.0)])  # older than the last t: a 409
    assert caught.value.status == 409 and caught.value.acknowledged == 0
    assert "409" in str(caught.value)


def flaky_client(failures: int, status: int | None = None) -> tuple[Client, list[int]]:
    """A client whose transport fails ``failures`` times (connection refused, or ``status``)."""
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) <= failures:
            if status is None:
                raise httpx.ConnectError("connection refused", request=request)
            return httpx.Response(status, json={"detail": "busy"}, headers={"Retry-After": "0"})
        n = len(request.read().decode().split('"t"')) - 1
        return httpx.Response(
            200, json={"accepted": n, "duplicates": 0, "last_t": 1, "n_observations": n}
        )

    client = Client("http://test", retries=3, backoff=0.0)
    client._http = httpx.Client(base_url="http://test", transport=httpx.MockTransport(handler))
    return client, calls


@pytest.mark.parametrize("status", [None, 503])
def test_push_retries_connection_errors_and_503s(status):
    client, calls = flaky_client(failures=2, status=status)
    result = client.push("s", [(0, 1.0), (1, 2.0)])
    assert result.accepted == 2 and len(calls) == 3


def test_push_gives_up_after_its_retries_and_counts_what_was_acknowledged():
    client, calls = flaky_client(failures=0)
    ok = client.push("s", [(0, 1.0), (1, 2.0)], batch_size=1)
    assert ok.sent == 2
    client, calls = flaky_client(failures=10)
    with pytest.raises(ServerUnavailable) as caught:
        client.push("s", [(0, 1.0)])
    assert len(calls) == 4 and caught.value.acknowledged == 0 and caught.value.status is None


# ---------------------------------------------------------------------- replay
def write_csv(path: Path, values: np.ndarray, scale: float = 1.0) -> Path:
    lines = ["time,value"] + [f"{i},{v * scale}" for i, v in enumerate(values)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_replay_prints_short_lines_and_stores_every_row(live_server, tmp_path):
    server = live_server()
    # Large values and long lines: nothing may be cut inside a number.
    csv = write_csv(tmp_path / "big.csv", wave(300) + 5.0, scale=123456.0)
    result = CliRunner().invoke(
        app,
        [
            *("replay", str(csv), "--target", "value", "--time", "time"),
            *("--url", server.url, "--speed", "0", "--batch", "25", "--every", "2"),
            *("--horizon", "12"),
        ],
        env={"COLUMNS": "80"},
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any("final forecast" in line for line in lines)
    assert lines[-1].startswith("sent 300 rows") and "300 accepted" in lines[-1]
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    final = lines[lines.index(next(x for x in lines if "final forecast" in x)) + 1]
    with Client(server.url) as client:
        served = client.forecast("value", horizon=12)
    shown = [float(x) for x in re.findall(r"-?\d+\.\d", final.split("next", 1)[1])]
    assert shown and shown == [round(v, 1) for v in served.mean[: len(shown)]]


def test_replay_exits_1_with_the_acknowledged_count_when_the_server_dies(tmp_path):
    data_dir = tmp_path / "var"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(serve_command(port, data_dir), env=os.environ.copy())
    csv = write_csv(tmp_path / "slow.csv", wave(5000))
    replay = None
    try:
        wait_until_ready(url, process=server)
        console_script = serve_command(port, data_dir)[:-7]  # without "serve" and its options
        replay = subprocess.Popen(
            [
                *console_script,
                *("replay", str(csv), "--target", "value", "--time", "time", "--url", url),
                *("--speed", "400", "--batch", "10", "--retries", "1", "--every", "1000"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

        def stored() -> int:
            try:
                series = httpx.get(f"{url}/v1/series/value", timeout=5).json()
            except (httpx.HTTPError, ValueError):
                return 0
            return int(series.get("n_observations", 0))

        assert wait_for(lambda: stored() >= 200, timeout=60)
        seen = stored()
        server.send_signal(signal.SIGKILL)
        server.wait(30)
        out, err = replay.communicate(timeout=60)
    finally:
        for process in (server, replay):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(30)
    assert replay.returncode == 1, (out, err)
    assert "Traceback" not in out + err
    match = re.search(r"(\d+) of 5000 rows were acknowledged", " ".join(err.split()))
    assert match, err
    reported = int(match.group(1))
    with sqlite3.connect(data_dir / "observations.sqlite3") as db:
        (durable,) = db.execute("SELECT coalesce(sum(n), 0) FROM chunks").fetchone()
    # Every row reported acknowledged is durable; the batch in flight at the kill (10 rows)
    # may have committed without its answer reaching replay.
    assert seen - 10 <= reported <= durable <= reported + 10


def test_client_module_imports_without_httpx():
    """Importing the client costs nothing beyond the library (httpx loads with a Client)."""
    code = (
        "import sys; sys.modules['httpx'] = None\n"
        "from episodic_koopman.client import Client, parse_forecast\n"
        "print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr


def test_stream_runs_beside_pushes_from_another_thread(live_server):
    """One Client shared by a reading thread and a pushing thread (httpx is thread-safe)."""
    server = live_server()
    seen: list[int] = []
    with Client(server.url) as client:
        client.configure("s", SMALL)
        client.push("s", [(0, 0.0)])
        got_three = threading.Event()

        def read() -> None:
            for f in client.stream("s", horizon=2):
                seen.append(f.n_observations)
                if f.n_observations >= 31:
                    got_three.set()
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        assert wait_for(lambda: bool(seen))
        for start in (1, 11, 21):
            client.push("s", [(start + i, float(i)) for i in range(10)])
        assert got_three.wait(30)
        reader.join(30)
    assert seen[0] == 1 and seen[-1] == 31 and seen == sorted(seen)
