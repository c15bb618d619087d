"""The issue-8 service rows, on a real server over loopback (part of ``make bench-service``).

One data dir, three server lives, default model parameters (the service's
``EPISODIC_KOOPMAN_MODEL_DEFAULTS``: capacity 4,000), bike-share counts from a
different offset per series (synthetic counts if the data file is not found):

1. Server 1 (default snapshot interval): ``--series`` series get 1,950 observations
   each (78k for 40), 100 per request over 8 connections. Throughput is the time from
   the first push until every series' read-your-writes forecast returned. Server RSS
   growth per series. Then SIGTERM (the server snapshots every model) and the data
   dir's size at rest.
2. Server 2 (snapshot interval ``--snapshot-interval`` s): restart to ready with
   current snapshots, per series beyond an empty server's start, extrapolated to
   1,000 series. Each series is topped up to 2,000 observations: RSS per series.
   Then steady ingest at ``--steady-rate`` obs/s for ``--steady-seconds`` (several
   snapshot periods): disk bytes the server wrote (``/proc/<pid>/io`` write_bytes)
   per acknowledged observation, and read-your-writes latency (a forecast right
   after an acknowledged push to the same series), split by whether a snapshot was
   being written (a temporary snapshot file existed).
3. Server 3, snapshots deleted: replay of every observation, obs/s.

Baselines from the same run, where one exists: RAM and replay against the bare
library model in this process; throughput against acknowledgement alone; restart
against an empty server's start; read-your-writes p99 against the probes with no
snapshot in flight. Results also go to ``results/bench_service.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from measure import (
    MIB,
    Row,
    dir_bytes,
    io_counters,
    percentile,
    print_table,
    rss_bytes,
    settled_rss_bytes,
    write_json,
)
from service_client import HOST, RawConnection, ServerProcess

from episodic_koopman import EpisodicKoopman, pin_threads

ROOT = Path(__file__).resolve().parents[1]
SERVICE_DEFAULTS = {"capacity": 4000}  # EPISODIC_KOOPMAN_MODEL_DEFAULTS' default
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


# -- baselines in this process: the bare library model -----------------------------------------


def library_baselines(fleet: Fleet, n_obs: int, n_models: int) -> tuple[float, float]:
    """RSS growth (bytes) per bare model with the service's defaults after ``n_obs``
    observations, and the in-process ``learn_many`` rate (obs/s) over each full series."""
    pin_threads()
    warm = EpisodicKoopman(**SERVICE_DEFAULTS)
    warm.learn_many(fleet.values[-1][:n_obs])
    warm.forecast(24)
    before = settled_rss_bytes()
    models = []
    for i in range(n_models):
        model = EpisodicKoopman(**SERVICE_DEFAULTS)
        model.learn_many(fleet.values[i][:n_obs])
        model.forecast(24)
        models.append(model)
    per_model = (settled_rss_bytes() - before) / n_models
    del models
    rates = []
    for i in range(min(3, len(fleet.values))):
        series = fleet.values[i][: fleet.sent[i]]
        model = EpisodicKoopman(**SERVICE_DEFAULTS)
        began = time.perf_counter()
        model.learn_many(series)
        rates.append(series.size / (time.perf_counter() - began))
    return per_model, statistics.median(rates)


# -- the run ------------------------------------------------------------------------------------


def sqlite_and_snapshot_bytes(data_dir: Path) -> tuple[int, int]:
    snapshots = dir_bytes(data_dir / "snapshots")
    return dir_bytes(data_dir) - snapshots, snapshots


def run(args: argparse.Namespace, data_dir: Path) -> tuple[list[Row], dict[str, Any]]:
    n = args.series
    first, top_up = 1950, 50
    steady_per_series = math.ceil(args.steady_rate * args.steady_seconds / n) + 2 * args.batch
    fleet = make_fleet(n, first + top_up + steady_per_series)
    print(f"series: {n} x {fleet.source}")
    meta: dict[str, Any] = {"series_source": fleet.source}
    interval_env = {"EPISODIC_KOOPMAN_SNAPSHOT_INTERVAL_SECONDS": str(args.snapshot_interval)}

    # 1. Server 1, default snapshot interval.
    server = ServerProcess(data_dir)
    empty_start = server.start()
    try:

        async def warm_up(conns: list[RawConnection]) -> None:
            # The first model pays one-time costs (imports, FAISS, BLAS buffers): not a series'.
            warm = Fleet([fleet.values[-1][:300]], "", [0])
            await check(conns[0], "POST", "/v1/series/warm-up/observations", warm.body(0, 300))
            await forecast_reflects(conns[0], "warm-up", 300)
            await check(conns[0], "DELETE", "/v1/series/warm-up")

        on_loop(server, warm_up)
        rss_empty = rss_bytes(server.pid)
        ack_seconds, applied_seconds = on_loop(
            server, lambda conns: bulk_ingest(conns, fleet, first, 100)
        )
        rss_live = rss_bytes(server.pid)
    finally:
        stop1 = server.stop()
    total_first = first * n
    sqlite_bytes, snapshot_bytes = sqlite_and_snapshot_bytes(data_dir)
    snapshot_files = len(list((data_dir / "snapshots").glob("*.ekm")))
    at_rest = sqlite_bytes + snapshot_bytes
    print(f"phase 1 done: {total_first} obs in {applied_seconds:.1f} s; stop {stop1:.1f} s")

    # 2. Server 2, short snapshot interval: restarts (alternating with empty servers' starts,
    # whose median is subtracted), then top-up and steady ingest on the last one.
    empty_starts, restarts, restore_spans = [empty_start], [], []
    for repeat in range(args.restart_repeats):
        if repeat:
            empty_dir = data_dir.with_name(data_dir.name + f"-empty{repeat}")
            empty = ServerProcess(empty_dir)
            try:
                empty_starts.append(empty.start())
            finally:
                empty.stop()
                shutil.rmtree(empty_dir, ignore_errors=True)
        server = ServerProcess(data_dir, interval_env)
        restarts.append(server.start())
        restore_spans.append(restarts[-1] - server.answered_after)
        if repeat < args.restart_repeats - 1:
            server.stop()
    empty_start = statistics.median(empty_starts)
    restart_seconds = statistics.median(restarts)
    try:

        async def top_up_all(conns: list[RawConnection]) -> None:
            for k in range(0, n, CONNECTIONS):
                group = range(k, min(k + CONNECTIONS, n))
                await asyncio.gather(
                    *(
                        check(
                            conns[i - k],
                            "POST",
                            f"/v1/series/{fleet.ids[i]}/observations",
                            fleet.body(i, top_up),
                        )
                        for i in group
                    )
                )
                await asyncio.gather(
                    *(forecast_reflects(conns[i - k], fleet.ids[i], fleet.sent[i]) for i in group)
                )

        async def top_up_and_snapshot(conns: list[RawConnection]) -> float:
            # RSS is read once the next periodic snapshot of every series has been written,
            # so it includes what saving leaves behind, as in any running server.
            before = await snapshots_written(conns[0])
            await top_up_all(conns)
            deadline = time.perf_counter() + 3 * args.snapshot_interval + 30
            while time.perf_counter() < deadline:
                if await snapshots_written(conns[0]) >= before + n:
                    break
                await asyncio.sleep(0.1)
            return await snapshots_written(conns[0]) - before

        top_up_snapshots = on_loop(server, top_up_and_snapshot)
        rss_2000 = rss_bytes(server.pid)

        async def steady(conns: list[RawConnection]) -> tuple[Any, ...]:
            before = await snapshots_written(conns[0])
            io_before, dir_before = io_counters(server.pid), dir_bytes(data_dir)
            acked, elapsed, probes = await steady_ingest(
                conns, fleet, args.steady_rate, args.batch, args.steady_seconds, args.probe_every
            )
            io_after, dir_after = io_counters(server.pid), dir_bytes(data_dir)
            after = await snapshots_written(conns[0])
            return (
                acked,
                elapsed,
                probes,
                after - before,
                io_before,
                io_after,
                dir_before,
                dir_after,
            )

        with SnapshotWatch(data_dir / "snapshots") as watch:
            acked, steady_elapsed, probes, snaps, io_before, io_after, dir_before, dir_after = (
                on_loop(server, steady)
            )
    finally:
        stop2 = server.stop()
    print(f"phase 2 done: steady {acked} obs in {steady_elapsed:.1f} s; stop {stop2:.1f} s")

    # 3. Server 3, no snapshots: replay everything.
    for path in (data_dir / "snapshots").glob("*.ekm"):
        path.unlink()
    total_obs = sum(fleet.sent)
    server = ServerProcess(data_dir, interval_env)
    replay_seconds = server.start()
    server.stop()
    print(f"phase 3 done: replayed {total_obs} obs in {replay_seconds:.1f} s")

    bare_model, library_rate = library_baselines(fleet, first + top_up, min(n, 10))

    # -- rows
    written = io_after["write_bytes"] - io_before["write_bytes"]
    snapshot_written = sum(watch.new_files.values())
    bursts = watch.bursts()
    burst_seconds = [b1 - b0 for b0, b1 in bursts]
    cancelled = io_after["cancelled_write_bytes"] - io_before["cancelled_write_bytes"]
    during = [p.seconds for p in probes if watch.overlaps(p.start, p.start + p.seconds)]
    outside = [p.seconds for p in probes if not watch.overlaps(p.start, p.start + p.seconds)]
    per_series_restore = max(restart_seconds - empty_start, 0.0) / n
    replay_rate = total_obs / max(replay_seconds - empty_start, 1e-9)
    snapshot_mb = snapshot_bytes / max(n, 1) / 1e6
    rows = [
        Row(
            "RAM per series at 2,000 obs (server RSS growth / series)",
            (rss_2000 - rss_empty) / n / MIB,
            "MiB",
            baseline=bare_model / MIB,
            bar=1,
            goal=0.5,
            note=(
                f"{n} series restored from snapshots, topped up, then snapshotted "
                f"({top_up_snapshots:.0f} snapshots); the live server before the restart, at "
                f"{first} obs, before any snapshot: {(rss_live - rss_empty) / n / MIB:.2f} "
                "MiB/series; "
                "baseline: bare model in this process (RSS growth / model)"
            ),
        ),
        Row(
            "disk bytes written per acknowledged obs, steady ingest",
            written / max(acked, 1),
            "B",
            bar=200,
            goal=100,
            note=(
                f"{acked} obs at {acked / steady_elapsed:,.0f} obs/s over {steady_elapsed:.0f} s "
                f"= {steady_elapsed / args.snapshot_interval:.1f} snapshot periods of "
                f"{args.snapshot_interval:g} s; write_bytes {written / 1e6:,.1f} MB "
                f"(cancelled {cancelled / 1e6:.1f} MB), of which snapshot files "
                f"{snapshot_written / 1e6:,.1f} MB ({snaps:.0f} snapshots, "
                f"{len(watch.new_files)} files seen) and the rest (SQLite, other) "
                f"{(written - snapshot_written) / max(acked, 1):,.0f} B/obs; data dir "
                f"{dir_before / MIB:.1f} -> {dir_after / MIB:.1f} MiB; raw t+y is 16 B"
            ),
        ),
        Row(
            f"data dir size, {n} series, {total_first:,} obs (at rest)",
            at_rest / MIB,
            "MiB",
            bar=20,
            goal=10,
            note=(
                f"after SIGTERM ({snapshot_files} snapshot files): "
                f"SQLite {sqlite_bytes / MIB:.1f} MiB, snapshots {snapshot_bytes / MIB:.1f} MiB "
                f"({snapshot_mb:.2f} MB per series)"
            ),
        ),
        Row(
            f"obs acknowledged and applied per second, {n} series",
            total_first / applied_seconds,
            "obs/s",
            baseline=total_first / ack_seconds,
            bar=25_000,
            goal=50_000,
            better="higher",
            note=(
                f"{total_first:,} obs, 100 per request, {CONNECTIONS} connections: last ack at "
                f"{ack_seconds:.1f} s, last read-your-writes forecast at {applied_seconds:.1f} s; "
                "baseline: acknowledged only"
            ),
        ),
        Row(
            "restart to ready with current snapshots, 1,000 series",
            empty_start + 1000 * per_series_restore,
            "s",
            baseline=empty_start,
            bar=5,
            goal=2,
            note=(
                f"extrapolated: {n} series ready in {restart_seconds:.2f} s, an empty server in "
                f"{empty_start:.2f} s (baseline; medians of {len(restarts)}): "
                f"{1e3 * per_series_restore:.1f} ms per series of {first} obs; from the first "
                f"answer to ready: {1e3 * statistics.median(restore_spans) / n:.1f} ms per series"
            ),
        ),
        Row(
            "replay with no snapshots (obs/s)",
            replay_rate,
            "obs/s",
            baseline=library_rate,
            bar=50_000,
            goal=200_000,
            better="higher",
            note=(
                f"{total_obs:,} obs of {n} series ready in {replay_seconds:.1f} s (minus the "
                "empty start); baseline: learn_many in this process"
            ),
        ),
        Row(
            "read-your-writes p99 while snapshots are written",
            1e3 * percentile(during, 0.99),
            "ms",
            baseline=1e3 * percentile(outside, 0.99),
            bar=50,
            goal=20,
            note=(
                f"forecast right after an acked push to the same series: {len(during)} probes "
                f"overlapped one of {len(bursts)} snapshot bursts (each "
                f"{statistics.median(burst_seconds) if bursts else math.nan:.1f} s, median; "
                f"p50 {1e3 * percentile(during, 0.5):.1f} ms), "
                f"{len(outside)} did not (baseline; p50 {1e3 * percentile(outside, 0.5):.1f} ms)"
            ),
        ),
    ]
    meta.update(
        {
            "snapshot_interval_seconds": args.snapshot_interval,
            "empty_start_seconds": empty_starts,
            "restart_seconds": restarts,
            "restore_spans_seconds": restore_spans,
            "replay_seconds": replay_seconds,
            "stop_seconds": [stop1, stop2],
            "steady": {
                "acked": acked,
                "seconds": steady_elapsed,
                "write_bytes": written,
                "cancelled_write_bytes": cancelled,
                "wchar": io_after["wchar"] - io_before["wchar"],
                "snapshots": snaps,
                "snapshot_file_bytes": snapshot_written,
                "snapshot_bursts_seconds": burst_seconds,
                "probes_during_snapshots": len(during),
                "probes_outside": len(outside),
                "all_probes_p99_ms": 1e3 * percentile([p.seconds for p in probes], 0.99),
            },
            "data_dir": {"sqlite_bytes": sqlite_bytes, "snapshot_bytes": snapshot_bytes},
        }
    )
    return rows, meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=40)
    parser.add_argument("--snapshot-interval", type=float, default=5.0, help="seconds (phase 2)")
    parser.add_argument("--steady-rate", type=float, default=2000.0, help="obs/s in all")
    parser.add_argument("--steady-seconds", type=float, default=31.0)
    parser.add_argument("--batch", type=int, default=10, help="obs per steady push")
    parser.add_argument("--restart-repeats", type=int, default=5)
    parser.add_argument("--probe-every", type=int, default=3, help="pushes per probe")
    parser.add_argument("--json", default=str(ROOT / "results" / "bench_service.json"))
    args = parser.parse_args()
    if args.steady_seconds < 2 * args.snapshot_interval:
        parser.error("--steady-seconds must cover at least two snapshot periods")

    began = time.perf_counter()
    data_dir = Path(tempfile.mkdtemp(prefix="bench-service-rows-"))
    try:
        rows, meta = run(args, data_dir)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    total = time.perf_counter() - began
    print_table(
        f"issue-8 service rows ({os.cpu_count()} cores, loopback, default model parameters, "
        f"{total:.0f} s)",
        rows,
    )
    write_json(
        args.json,
        {
            "benchmark": "bench_service_rows",
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {sys.version.split()[0]}",
            "args": vars(args),
            "seconds": total,
            **meta,
        },
        rows,
    )
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
