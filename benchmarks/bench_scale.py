"""The Ray engine on one machine: applied observations/s with 1 and 2 shard actors, forecast
latency over many series, and PostgreSQL commits/s.

    python benchmarks/bench_scale.py                  # a throwaway PostgreSQL (fsync=on)
    python benchmarks/bench_scale.py --database postgresql://user@host/db

For each shard count, ``episodic-koopman serve --engine ray --shards N`` runs as a
subprocess (a local Ray on every core) and this process is the HTTP client:

* **applied obs/s**: ``--series`` series with the library's default parameters get
  ``--observations`` each, in pushes of ``--batch``, one client thread per series; the
  clock stops when every series' forecast (read-your-writes) reflects all of them. That
  is the models' learning rate end to end (parsing, commits and HTTP included);
* **commits/s**: one client, one observation per push (every push its own durable commit),
  and the commits the actors made during the applied phase (group commits);
* **forecast latency**: ``--forecast-series`` small series (``delays=8, window=32``, 64
  observations each), then ``--forecasts`` random ``GET /forecast?horizon=24`` from 4
  client threads, latency as the client sees it.

Prints a table and writes ``results/bench_scale.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from episodic_koopman import EpisodicKoopman
from service.ray_engine import actor_of

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from postgres_server import throwaway_server  # noqa: E402

SMALL = {"delays": 8, "window": 32, "episode_horizon": 8, "stride": 2, "capacity": 500}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``serve --engine ray`` in a subprocess, on a fresh schema."""

    def __init__(self, url: str, shards: int, workdir: Path) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        script = Path(sys.executable).with_name("episodic-koopman")
        env = {
            **os.environ,
            "RAY_USAGE_STATS_ENABLED": "0",
            "EPISODIC_KOOPMAN_MODEL_DEFAULTS": json.dumps(SMALL),
            "EPISODIC_KOOPMAN_SNAPSHOT_INTERVAL_SECONDS": "3600",
        }
        self.process = subprocess.Popen(
            [
                str(script),
                "serve",
                "--engine",
                "ray",
                "--shards",
                str(shards),
                "--database",
                url,
                "--data-dir",
                str(workdir / f"var-{shards}"),
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            env=env,
        )

    def wait_ready(self, timeout: float = 300.0) -> float:
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                    return time.monotonic() - began
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError("the server did not become ready")

    def commits(self) -> int:
        return int(httpx.get(f"{self.base}/readyz", timeout=30).json()["details"]["commits"])

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def runqueue_seconds(pid: int) -> float:
    """Seconds the process's threads were runnable but waited for a core (schedstat)."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(stat.read_text().split()[1])
    return total / 1e9


def cpu_by_group(server: Server, postmaster: int | None) -> dict[str, float]:
    """CPU seconds so far of the shard actors, the API server, the rest of Ray, PostgreSQL
    and this client (so that a run can say where the cores went)."""
    groups = dict.fromkeys(("actors", "api", "ray", "postgres", "client", "actors waiting"), 0.0)

    def seconds(process: psutil.Process) -> float:
        times = process.cpu_times()
        return times.user + times.system

    with contextlib.suppress(psutil.Error):
        api = psutil.Process(server.process.pid)
        groups["api"] = seconds(api)
        for child in api.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                name = "actors" if "ShardActor" in " ".join(child.cmdline()) else "ray"
                groups[name] += seconds(child)
                if name == "actors":
                    groups["actors waiting"] += runqueue_seconds(child.pid)
    if postmaster is not None:
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(postmaster).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    groups["postgres"] += seconds(child)
    groups["client"] = seconds(psutil.Process())
    return groups


def _body(values: np.ndarray, start: int) -> dict[str, Any]:
    return {"observations": [{"t": start + i, "y": float(v)} for i, v in enumerate(values)]}


def _values(n: int, seed: int) -> np.ndarray:
    t = np.arange(n, dtype=np.float64)
    noise = np.random.default_rng(seed).standard_normal(n)
    return np.sin(2 * np.pi * t / 24) + 0.5 * np.sin(2 * np.pi * t / 7) + 0.05 * noise


def balanced_ids(n: int, prefix: str) -> list[str]:
    """Series ids spread evenly over two actors (so 2 shards split the work in half)."""
    ids: dict[int, list[str]] = {0: [], 1: []}
    k = 0
    while min(len(v) for v in ids.values()) < n // 2:
        sid = f"{prefix}{k}"
        owner = actor_of(sid, 2, 64)
        if len(ids[owner]) < n // 2:
            ids[owner].append(sid)
        k += 1
    return ids[0] + ids[1]


def applied_rate(
    server: Server, args: argparse.Namespace, postmaster: int | None
) -> dict[str, float]:
    # The library's defaults where the server's (small) model defaults differ.
    library = EpisodicKoopman().to_flat()
    defaults = {name: library[name] for name in SMALL}
    ids = balanced_ids(args.series, "heavy-")
    with httpx.Client(base_url=server.base, timeout=600) as client:
        for sid in ids:
            client.put(f"/v1/series/{sid}", json={"params": defaults}).raise_for_status()
    commits0 = server.commits()
    cpu0 = cpu_by_group(server, postmaster)

    def feed(sid: str) -> None:
        values = _values(args.observations, seed=hash(sid) % 1000)
        with httpx.Client(base_url=server.base, timeout=600) as client:
            for start in range(0, args.observations, args.batch):
                body = _body(values[start : start + args.batch], start)
                client.post(f"/v1/series/{sid}/observations", json=body).raise_for_status()
            client.get(f"/v1/series/{sid}/forecast").raise_for_status()  # read-your-writes

    began = time.perf_counter()
    threads = [threading.Thread(target=feed, args=(sid,)) for sid in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    cpu = cpu_by_group(server, postmaster)
    row = {
        "applied obs/s": len(ids) * args.observations / elapsed,
        "group commits/s": (server.commits() - commits0) / elapsed,
    }
    # Cores each group kept busy during the phase (2 cores in all on the dev machine).
    row.update({f"cores: {name}": (cpu[name] - cpu0[name]) / elapsed for name in cpu})
    return row


def serial_commits(server: Server, seconds: float) -> float:
    with httpx.Client(base_url=server.base, timeout=60) as client:
        client.put("/v1/series/serial", json={}).raise_for_status()
        began, n = time.perf_counter(), 0
        while time.perf_counter() - began < seconds:
            client.post("/v1/series/serial/observations", json=_body(np.ones(1), n))
            n += 1
        return n / (time.perf_counter() - began)


def forecast_latency(server: Server, args: argparse.Namespace) -> dict[str, float]:
    ids = [f"f{k}" for k in range(args.forecast_series)]
    values = _values(64, seed=0)

    def create(mine: list[str]) -> None:
        with httpx.Client(base_url=server.base, timeout=600) as client:
            for sid in mine:
                client.post(f"/v1/series/{sid}/observations", json=_body(values, 0))

    threads = [threading.Thread(target=create, args=(ids[k::16],)) for k in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rng = random.Random(0)
    picks = [rng.choice(ids) for _ in range(args.forecasts)]
    with httpx.Client(base_url=server.base, timeout=600) as client:
        for sid in rng.sample(ids, min(len(ids), 200)):  # every actor caught up (warm-up)
            client.get(f"/v1/series/{sid}/forecast")
    latencies: list[float] = []
    lock = threading.Lock()

    def read(mine: list[str]) -> None:
        with httpx.Client(base_url=server.base, timeout=600) as client:
            for sid in mine:
                t0 = time.perf_counter()
                client.get(f"/v1/series/{sid}/forecast", params={"horizon": 24}).raise_for_status()
                with lock:
                    latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=read, args=(picks[k::4],)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ms = np.array(latencies) * 1000
    return {
        "forecast p50 ms": float(np.median(ms)),
        "forecast p99 ms": float(np.quantile(ms, 0.99)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", default="", help="an existing postgresql:// URL")
    parser.add_argument("--shards", default="1,2")
    parser.add_argument("--series", type=int, default=8)
    parser.add_argument("--observations", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--serial-seconds", type=float, default=10.0)
    parser.add_argument("--forecast-series", type=int, default=10_000, help="0: skip")
    parser.add_argument("--forecasts", type=int, default=2000)
    args = parser.parse_args()

    pg = throwaway_server(args.database)
    base_url = args.database
    postmaster = None
    if pg is not None:
        postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
    workdir = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    results: dict[int, dict[str, float]] = {}
    try:
        for shards in (int(s) for s in args.shards.split(",")):
            url = pg.fresh_url() if pg is not None else base_url
            for attempt in range(3):
                server = Server(url, shards, workdir)
                try:
                    row = {"start-up s": server.wait_ready()}
                    break
                except RuntimeError:  # its port was taken meanwhile (Ray opens many)
                    if attempt == 2:
                        raise
            try:
                row["load average"] = os.getloadavg()[0]  # other jobs on the machine
                row.update(applied_rate(server, args, postmaster))
                row["serial commits/s"] = serial_commits(server, args.serial_seconds)
                if args.forecast_series:
                    row.update(forecast_latency(server, args))
            finally:
                server.stop()
            results[shards] = row
            print(f"{shards} shard(s): {row}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if pg is not None:
            pg.stop()
    columns = list(next(iter(results.values())))
    print(f"\n| shard actors | {' | '.join(columns)} |")
    print("| ---: |" + " ---: |" * len(columns))
    for shards, row in results.items():
        print(f"| {shards} | " + " | ".join(f"{row.get(c, 0):,.2f}" for c in columns) + " |")
    if 1 in results and 2 in results:
        ratio = results[2]["applied obs/s"] / results[1]["applied obs/s"]
        print(f"\napplied obs/s, 2 shards / 1 shard: {ratio:.2f}x (bar: 1.7x)")
    out = ROOT / "results" / "bench_scale.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "args": vars(args),
                "cpus": os.cpu_count(),
                "load_average": os.getloadavg(),
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
