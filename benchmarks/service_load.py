"""The load generator of the service-row benchmark: series data, pushes, probes, a snapshot watch.

Every request goes to a loopback server; every loop is bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from service_client import HOST, RawConnection, ServerProcess

CONNECTIONS = 8


@dataclass
class Fleet:
    """The benchmark's series: their data, and how many observations each has sent."""

    values: list[np.ndarray]
    source: str
    sent: list[int] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [f"s{i:03d}" for i in range(len(self.values))]

    def body(self, i: int, n: int) -> bytes:
        """The next ``n`` observations of series ``i`` as a push body (t = index)."""
        start = self.sent[i]
        chunk = self.values[i][start : start + n]
        self.sent[i] += chunk.size
        rows = [{"t": start + j, "y": float(v)} for j, v in enumerate(chunk)]
        return json.dumps({"observations": rows}).encode()


def make_fleet(n_series: int, per_series: int) -> Fleet:
    """Bike-share counts from spread-out offsets (wrapping around), else synthetic counts."""
    try:
        from episodic_koopman.datasets import load_bike_sharing

        data = load_bike_sharing().values.astype(np.float64)
        source = f"bike-share hourly counts ({data.size} h), offsets spread per series"
    except (FileNotFoundError, ImportError, OSError):
        rng = np.random.default_rng(0)
        t = np.arange(17_544)
        rate = 120 * (1 + np.sin(2 * np.pi * t / 24)) * (1 + 0.3 * np.sin(2 * np.pi * t / 168))
        data = rng.poisson(np.clip(rate, 1, None)).astype(np.float64)
        source = "synthetic daily+weekly counts (bike-share data not found)"
    spare = max(data.size - per_series, 1)
    values = [np.roll(data, -((i * spare) // n_series))[:per_series] for i in range(n_series)]
    return Fleet(values, source, [0] * n_series)


# -- phases (async, over raw keep-alive connections) ------------------------------------------


async def check(conn: RawConnection, method: str, path: str, body: bytes = b"") -> bytes:
    status, text = await conn.request(method, path, body)
    if status >= 400:
        raise RuntimeError(f"{method} {path}: {status} {text[:300]!r}")
    return text


async def forecast_reflects(conn: RawConnection, series_id: str, expected: int) -> None:
    """A read-your-writes forecast; it must reflect every acknowledged observation."""
    text = await check(conn, "GET", f"/v1/series/{series_id}/forecast?horizon=24")
    seen = json.loads(text)["n_observations"]
    if seen != expected:
        raise RuntimeError(f"{series_id}: forecast reflects {seen} observations, not {expected}")


async def bulk_ingest(
    conns: list[RawConnection], fleet: Fleet, per_series: int, per_request: int
) -> tuple[float, float]:
    """Every series gets ``per_series`` more observations (round-robin over its connection's
    series), then each connection reads its series' forecasts. Returns the seconds until
    the last acknowledgement, and until the last forecast."""
    plans: list[list[tuple[int, bytes]]] = [[] for _ in conns]
    for k in range(len(conns)):
        for m in range(math.ceil(per_series / per_request)):
            n = min(per_request, per_series - m * per_request)
            for i in range(k, len(fleet.values), len(conns)):
                plans[k].append((i, fleet.body(i, n)))
    # (the bodies are built before the clock starts: the client measures the server)
    acked: list[float] = []
    began = time.perf_counter()

    async def worker(k: int) -> None:
        for i, body in plans[k]:
            await check(conns[k], "POST", f"/v1/series/{fleet.ids[i]}/observations", body)
        acked.append(time.perf_counter() - began)
        for i in range(k, len(fleet.values), len(conns)):
            await forecast_reflects(conns[k], fleet.ids[i], fleet.sent[i])

    await asyncio.wait_for(asyncio.gather(*(worker(k) for k in range(len(conns)))), 900)
    return max(acked), time.perf_counter() - began


class SnapshotWatch:
    """Polls the snapshot dir from a thread: when were snapshots being written, and how
    many bytes of snapshot files appeared?

    A temporary ``.tmp-*`` file exists from the start of one save to its rename. The
    periodic task saves every changed model one after the other, so samples less than
    ``gap`` apart are merged into one burst: a read during a burst is "during snapshots"
    even in the instant between two files.
    """

    def __init__(self, directory: Path, period: float = 0.005, gap: float = 0.5) -> None:
        self.directory, self.period, self.gap = directory, period, gap
        self.active: list[float] = []  # perf_counter times at which a write was in flight
        self.new_files: dict[str, int] = {}  # snapshot files that appeared, and their sizes
        self._existing = {e.name for e in os.scandir(directory)} if directory.exists() else set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SnapshotWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.perf_counter()
            try:
                entries = list(os.scandir(self.directory))
            except FileNotFoundError:
                entries = []
            if any(e.name.startswith(".tmp-") for e in entries):
                self.active.append(now)
            for entry in entries:
                fresh = entry.name not in self._existing and entry.name not in self.new_files
                if fresh and entry.name.endswith(".ekm") and not entry.name.startswith("."):
                    try:
                        self.new_files[entry.name] = entry.stat().st_size
                    except FileNotFoundError:
                        pass
            self._stop.wait(self.period)

    def bursts(self) -> list[tuple[float, float]]:
        merged: list[tuple[float, float]] = []
        for t in self.active:
            if merged and t - merged[-1][1] <= self.gap:
                merged[-1] = (merged[-1][0], t)
            else:
                merged.append((t, t))
        return merged

    def overlaps(self, start: float, end: float) -> bool:
        return any(
            b0 - self.period <= end and start <= b1 + self.period for b0, b1 in self.bursts()
        )


@dataclass
class Probe:
    start: float
    seconds: float


async def steady_ingest(
    conns: list[RawConnection],
    fleet: Fleet,
    rate: float,
    batch: int,
    seconds: float,
    probe_every: int,
) -> tuple[int, float, list[Probe]]:
    """Paced pushes of ``batch`` observations (``rate`` obs/s in all); every
    ``probe_every``-th push is followed by a forecast of the same series, timed.
    Returns the observations acknowledged, the elapsed time and the probes."""
    conns = conns[: len(fleet.values)]  # a connection per series at most
    interval = len(conns) * batch / rate  # between one connection's pushes
    per_conn = max(1, int(seconds / interval))
    probes: list[Probe] = []
    acked = 0
    began = time.perf_counter()
    deadline = began + 3 * seconds + 30

    async def worker(k: int) -> None:
        nonlocal acked
        mine = list(range(k, len(fleet.values), len(conns)))
        for n in range(per_conn):
            due = began + n * interval + k * interval / len(conns)
            now = time.perf_counter()
            if now > deadline:
                return
            if due > now:
                await asyncio.sleep(due - now)
            i = mine[n % len(mine)]
            body = fleet.body(i, batch)
            await check(conns[k], "POST", f"/v1/series/{fleet.ids[i]}/observations", body)
            acked += batch
            if n % probe_every == probe_every - 1:
                start = time.perf_counter()
                await forecast_reflects(conns[k], fleet.ids[i], fleet.sent[i])
                probes.append(Probe(start, time.perf_counter() - start))

    await asyncio.gather(*(worker(k) for k in range(len(conns))))
    return acked, time.perf_counter() - began, probes


async def snapshots_written(conn: RawConnection) -> float:
    text = (await check(conn, "GET", "/metrics")).decode()
    for line in text.splitlines():
        if line.startswith("episodic_koopman_snapshots_total"):
            return float(line.split()[-1])
    return math.nan


def on_loop(server: ServerProcess, phase: Any) -> Any:
    """Run ``phase(connections)`` on a new event loop (connections belong to one loop)."""

    async def run_phase() -> Any:
        conns = [RawConnection(HOST, server.port) for _ in range(CONNECTIONS)]
        try:
            return await phase(conns)
        finally:
            for conn in conns:
                conn.close()

    return asyncio.run(run_phase())
