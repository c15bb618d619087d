"""Helpers for the service tests (fixtures live in conftest.py)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import uvicorn

from episodic_koopman import EpisodicKoopman, pin_threads
from service.main import create_app
from service.settings import Settings
from service.storage import open_storage

# Reference models run in the main thread: FAISS's OpenMP pool is per thread.
pin_threads()

#: A small model, so that tests fit and recall within a few hundred observations.
SMALL: dict[str, Any] = {"delays": 8, "window": 32, "episode_horizon": 8, "stride": 2}


#: Headless, offline and quiet: no GPU, no QUIC, no background or update traffic.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def wave(n: int, start: int = 0, seed: int = 0) -> np.ndarray:
    """Two sines plus a little noise: a series the model fits and recalls."""
    t = np.arange(start, start + n, dtype=np.float64)
    noise = np.random.default_rng(seed + start).standard_normal(n)
    return np.sin(2 * np.pi * t / 12.0) + 0.5 * np.sin(2 * np.pi * t / 5.0) + 0.05 * noise


def batch(values: np.ndarray, start: int = 0) -> dict[str, Any]:
    """A JSON push body with numeric times ``start, start + 1, ...``."""
    return {"observations": [{"t": start + i, "y": float(v)} for i, v in enumerate(values)]}


def reference_forecast(
    params: dict[str, Any], values: Any, horizon: int, level: float | None = None
) -> dict[str, Any]:
    """What an in-process model fed the same observations forecasts (JSON-safe)."""
    model = EpisodicKoopman.from_flat(params)
    if len(values):
        model.learn_many(values)
    return model.predict(horizon, level).to_dict()


def assert_same_forecast(served: dict[str, Any], expected: dict[str, Any]) -> None:
    """Bit-identical means, bounds and recalled episodes (JSON floats round-trip exactly)."""
    for name in ("mean", "lower", "upper", "recall_applied", "fallback"):
        assert served[name] == expected[name], name
    got = [
        (r["id"], r["origin"], r["window_start"], r["distance"], r["weight"])
        for r in served["recalled"]
    ]
    want = [
        (r["id"], r["origin"], r["window_start"], r["distance"], r["weight"])
        for r in expected["recalled"]
    ]
    assert got == want


def hold_learning(server: LiveServer, series_id: str, gate_dir: Path, monkeypatch: Any) -> None:
    """Hold the server's apply worker inside ``series_id`` (`learning_gate`), wherever the
    models live: in this process (undone by ``monkeypatch``) or in every shard actor."""
    import learning_gate

    from service.applier import Applier

    gate_dir.mkdir(parents=True, exist_ok=True)
    engine = server.app.state.service.engine
    processes = getattr(engine, "processes", None)
    if processes is not None:  # shard processes import the tests' modules (they share sys.path)
        for index in range(processes.n_hosts):
            install = (learning_gate.install, series_id, str(gate_dir))
            processes.call_from_thread(index, "run", *install)
        return
    actors = getattr(engine, "actors", None)
    if actors is None:
        gate = learning_gate.gated(Applier._learn, series_id, str(gate_dir))
        monkeypatch.setattr(Applier, "_learn", staticmethod(gate))
        return
    import ray
    import ray.cloudpickle

    # The actors cannot import the tests' modules: send the gate's code with the call.
    ray.cloudpickle.register_pickle_by_value(learning_gate)
    ray.get([actor.run.remote(learning_gate.install, series_id, str(gate_dir)) for actor in actors])


def ray_engine_settings() -> dict[str, Any]:
    """Settings of a Ray-engine app: two shard actors (lists merge, series have different
    owners) in a namespace of its own (actors of other apps are not found by name)."""
    return {"engine": "ray", "shards": 2, "ray_namespace": f"t-{uuid.uuid4().hex[:12]}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """The app under uvicorn in a background thread (real sockets, for SSE and concurrency)."""

    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        wait_until_ready(self.url)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)

    @property
    def registry(self) -> Any:
        return self.app.state.service.registry


def wait_until_ready(
    url: str, timeout: float = 180.0, process: subprocess.Popen | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not become ready")


def serve_command(port: int, data_dir: Path, database: str = "") -> list[str]:
    """``episodic-koopman serve`` as a subprocess (the console script of this interpreter)."""
    script = Path(sys.executable).with_name("episodic-koopman")
    prefix = [str(script)] if script.exists() else [sys.executable, "-c", _MAIN]
    return [
        *prefix,
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        *(["--database", database] if database else []),
        "--log-level",
        "warning",
    ]


_MAIN = (
    "import sys; from episodic_koopman.cli import main; sys.argv[0] = 'episodic-koopman'; main()"
)


def metric(text: str, name: str) -> float:
    """The value of an unlabelled sample in Prometheus text."""
    (line,) = [line for line in text.splitlines() if line.startswith(f"{name} ")]
    return float(line.split()[-1])


def wait_for(condition, timeout: float = 20.0) -> bool:
    """Poll a condition (the server works asynchronously); bounded, not a timing check."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def stored_snapshots(settings: Settings) -> dict[str, int]:
    """The newest stored snapshot's seq of each incarnation, read afresh from wherever the
    settings' backend keeps them (files beside SQLite, rows in PostgreSQL)."""
    storage = open_storage(settings)
    storage.initialise()
    epochs = {shard: epoch for shard, (_, epoch) in storage.owners().items()}
    # Shard processes and actors keep files in a dir each (PostgreSQL: one store for all).
    directories = [settings.snapshot_dir]
    if not settings.database:
        directories += sorted(settings.snapshot_dir.glob("ray-*-of-*"))
    newest: dict[str, int] = {}
    for directory in directories:
        store = storage.snapshot_store(directory, epochs)
        try:
            for incarnation, seqs in store.stored().items():
                newest[incarnation] = max(newest.get(incarnation, 0), seqs[-1])
        finally:
            store.close()
    return newest


def corrupt_snapshots(settings: Settings) -> int:
    """Overwrite every stored snapshot with bytes that are no model; returns how many."""
    if not settings.database:
        paths = list(settings.snapshot_dir.glob("*.ekm"))
        for path in paths:
            path.write_bytes(b"not a model")
        return len(paths)
    import psycopg

    with psycopg.connect(settings.database, autocommit=True) as conn:
        return conn.execute("UPDATE snapshots SET model = 'not a model'::bytea").rowcount
