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
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from measure import (
    MIB,
    Row,
    dir_bytes,
    percentile,
    print_table,
    settled_rss_bytes,
    tree_io_counters,
    tree_rss_bytes,
    write_json,
)
from service_client import RawConnection, ServerProcess, cpu_seconds, process_tree
from service_load import (
    CONNECTIONS,
    Fleet,
    SnapshotWatch,
    bulk_ingest,
    check,
    forecast_reflects,
    make_fleet,
    on_loop,
    snapshots_written,
    steady_ingest,
)

from episodic_koopman import EpisodicKoopman, pin_threads

ROOT = Path(__file__).resolve().parents[1]
SERVICE_DEFAULTS = {"capacity": 4000}  # EPISODIC_KOOPMAN_MODEL_DEFAULTS' default


# -- baselines in this process: the bare library model -----------------------------------------


def library_baselines(fleet: Fleet, n_obs: int, n_models: int) -> tuple[float, float]:
    """RSS growth (bytes) per bare model with the service's defaults after ``n_obs``
    observations, and the in-process ``learn_many`` rate (obs/s) over each full series."""
    pin_threads()
    warm = EpisodicKoopman.from_flat(SERVICE_DEFAULTS)
    warm.learn_many(fleet.values[-1][:n_obs])
    warm.forecast(24)
    before = settled_rss_bytes()
    models = []
    for i in range(n_models):
        model = EpisodicKoopman.from_flat(SERVICE_DEFAULTS)
        model.learn_many(fleet.values[i][:n_obs])
        model.forecast(24)
        models.append(model)
    per_model = (settled_rss_bytes() - before) / n_models
    del models
    rates = []
    for i in range(min(3, len(fleet.values))):
        series = fleet.values[i][: fleet.sent[i]]
        model = EpisodicKoopman.from_flat(SERVICE_DEFAULTS)
        began = time.perf_counter()
        model.learn_many(series)
        rates.append(series.size / (time.perf_counter() - began))
    return per_model, statistics.median(rates)


# -- the run ------------------------------------------------------------------------------------


def sqlite_and_snapshot_bytes(data_dir: Path) -> tuple[int, int]:
    snapshots = dir_bytes(data_dir / "snapshots")
    return dir_bytes(data_dir) - snapshots, snapshots


def restart_row(
    n: int, first: int, empty_start: float, restarts: list[float], restore_spans: list[float]
) -> Row:
    """The restart row: ``n`` series' restarts against an empty server's start."""
    restart_seconds = statistics.median(restarts)
    # Two estimates of one series' restore: beyond an empty server's start (noisy: two
    # process starts), and from the first answer to ready (misses what was restored before
    # the first answer). The larger one is used, so noise cannot make a restart look free.
    beyond_empty = max(restart_seconds - empty_start, 0.0) / n
    after_answer = max(statistics.median(restore_spans), 0.0) / n
    per_series_restore = max(beyond_empty, after_answer)
    return Row(
        "restart to ready with current snapshots, 1,000 series",
        empty_start + 1000 * per_series_restore,
        "s",
        baseline=empty_start,
        bar=5,
        goal=2,
        note=(
            f"extrapolated at {1e3 * per_series_restore:.1f} ms per series of {first} obs, "
            f"the larger of: {n} series ready in {restart_seconds:.2f} s against an empty "
            f"server's {empty_start:.2f} s (baseline; medians of {len(restarts)}), "
            f"{1e3 * beyond_empty:.1f} ms per series; first answer to ready, "
            f"{1e3 * after_answer:.1f} ms per series"
        ),
    )


def run(args: argparse.Namespace, data_dir: Path) -> tuple[list[Row], dict[str, Any]]:
    n = args.series
    first, top_up = 1950, 50
    steady_per_series = math.ceil(args.steady_rate * args.steady_seconds / n) + 2 * args.batch
    fleet = make_fleet(n, first + top_up + steady_per_series)
    print(f"series: {n} x {fleet.source}")
    meta: dict[str, Any] = {"series_source": fleet.source}
    interval_env = {"EPISODIC_KOOPMAN_SNAPSHOT_INTERVAL_SECONDS": str(args.snapshot_interval)}
    if args.snapshot_bytes_per_observation is not None:
        # A large budget forces snapshots of every changed model at every check: the
        # read-your-writes row then has probes during snapshots (the default budget of
        # 100 B/obs snapshots none of these series within the steady ingest).
        interval_env["EPISODIC_KOOPMAN_SNAPSHOT_BYTES_PER_OBSERVATION"] = str(
            args.snapshot_bytes_per_observation
        )

    # 1. Server 1, default snapshot interval. The backlog may take longer to apply than a
    # read's default wait on a loaded machine: the row measures when it is applied.
    server = ServerProcess(data_dir, {"EPISODIC_KOOPMAN_READ_YOUR_WRITES_TIMEOUT": "900"})
    empty_start = server.start()
    try:

        async def warm_up(conns: list[RawConnection]) -> None:
            # The first model pays one-time costs (imports, FAISS, BLAS buffers): not a series'.
            warm = Fleet([fleet.values[-1][:300]], "", [0])
            await check(conns[0], "POST", "/v1/series/warm-up/observations", warm.body(0, 300))
            await forecast_reflects(conns[0], "warm-up", 300)
            await check(conns[0], "DELETE", "/v1/series/warm-up")

        on_loop(server, warm_up)
        rss_empty = tree_rss_bytes(process_tree(server.pid))
        cpu_before = cpu_seconds(server.pid)
        ack_seconds, applied_seconds = on_loop(
            server, lambda conns: bulk_ingest(conns, fleet, first, 100)
        )
        meta["applied_cpu_seconds"] = cpu_seconds(server.pid) - cpu_before
        rss_live = tree_rss_bytes(process_tree(server.pid))
    finally:
        stop1 = server.stop()
    total_first = first * n
    sqlite_bytes, snapshot_bytes = sqlite_and_snapshot_bytes(data_dir)
    snapshot_files = len(list((data_dir / "snapshots").glob("*.ekm")))
    at_rest = sqlite_bytes + snapshot_bytes
    print(f"phase 1 done: {total_first} obs in {applied_seconds:.1f} s; stop {stop1:.1f} s")
    if args.rates_only:
        return rates_only(args, data_dir, fleet, interval_env, ack_seconds, applied_seconds, meta)

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
    meta.update(
        {
            "empty_start_seconds": empty_starts,
            "restart_seconds": restarts,
            "restore_spans_seconds": restore_spans,
        }
    )
    if args.restart_only:
        server.stop()
        return [restart_row(n, first, empty_start, restarts, restore_spans)], meta
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
        rss_2000 = tree_rss_bytes(process_tree(server.pid))

        async def steady(conns: list[RawConnection]) -> tuple[Any, ...]:
            before = await snapshots_written(conns[0])
            io_before, dir_before = tree_io_counters(process_tree(server.pid)), dir_bytes(data_dir)
            acked, elapsed, probes = await steady_ingest(
                conns, fleet, args.steady_rate, args.batch, args.steady_seconds, args.probe_every
            )
            io_after, dir_after = tree_io_counters(process_tree(server.pid)), dir_bytes(data_dir)
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
    for path in data_dir.rglob("*.ekm"):  # shard processes keep theirs in subdirs
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
        applied_row(n, total_first, ack_seconds, applied_seconds, meta["applied_cpu_seconds"]),
        restart_row(n, first, empty_start, restarts, restore_spans),
        replay_row(total_obs, n, replay_seconds, empty_start, library_rate),
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


def applied_row(
    n: int, total_first: int, ack_seconds: float, applied_seconds: float, cpu: float
) -> Row:
    return Row(
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
            f"server CPU (all its processes) {1e6 * cpu / total_first:.0f} us/obs; "
            "baseline: acknowledged only"
        ),
    )


def replay_row(
    total_obs: int, n: int, replay_seconds: float, empty_start: float, library_rate: float
) -> Row:
    return Row(
        "replay with no snapshots (obs/s)",
        total_obs / max(replay_seconds - empty_start, 1e-9),
        "obs/s",
        baseline=library_rate,
        bar=50_000,
        goal=200_000,
        better="higher",
        note=(
            f"{total_obs:,} obs of {n} series ready in {replay_seconds:.1f} s (minus the "
            f"empty start, {empty_start:.2f} s); baseline: learn_many in this process"
        ),
    )


def rates_only(
    args: argparse.Namespace,
    data_dir: Path,
    fleet: Fleet,
    interval_env: dict[str, str],
    ack_seconds: float,
    applied_seconds: float,
    meta: dict[str, Any],
) -> tuple[list[Row], dict[str, Any]]:
    """``--rates-only``: phase 1's applied rate, then phase 3's replay (no phase 2)."""
    n, total_first = args.series, sum(fleet.sent)
    empty_dir = data_dir.with_name(data_dir.name + "-empty")
    empty = ServerProcess(empty_dir)
    try:
        empty_start = empty.start()
    finally:
        empty.stop()
        shutil.rmtree(empty_dir, ignore_errors=True)
    for path in data_dir.rglob("*.ekm"):
        path.unlink()
    server = ServerProcess(data_dir, interval_env)
    replay_seconds = server.start()
    meta["replay_cpu_seconds"] = cpu_seconds(server.pid)
    server.stop()
    print(
        f"phase 3 done: replayed {total_first} obs in {replay_seconds:.1f} s, "
        f"server CPU {meta['replay_cpu_seconds']:.1f} s (start-up included)"
    )
    _, library_rate = library_baselines(fleet, total_first // n, 1)
    rows = [
        applied_row(n, total_first, ack_seconds, applied_seconds, meta["applied_cpu_seconds"]),
        replay_row(total_first, n, replay_seconds, empty_start, library_rate),
    ]
    meta.update({"replay_seconds": replay_seconds, "empty_start_seconds": [empty_start]})
    return rows, meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=40)
    parser.add_argument("--snapshot-interval", type=float, default=5.0, help="seconds (phase 2)")
    parser.add_argument(
        "--snapshot-bytes-per-observation",
        type=float,
        default=None,
        help="the snapshot budget of phases 2 and 3 (default: the server's); e.g. 1e6 "
        "snapshots every changed series at every check",
    )
    parser.add_argument("--steady-rate", type=float, default=2000.0, help="obs/s in all")
    parser.add_argument("--steady-seconds", type=float, default=31.0)
    parser.add_argument("--batch", type=int, default=10, help="obs per steady push")
    parser.add_argument("--restart-repeats", type=int, default=5)
    parser.add_argument("--probe-every", type=int, default=3, help="pushes per probe")
    parser.add_argument(
        "--restart-only",
        action="store_true",
        help="stop after the restarts of phase 2: only the restart row (phase 1 fills the dir)",
    )
    parser.add_argument(
        "--rates-only",
        action="store_true",
        help="only the applied-rate (phase 1) and replay (phase 3) rows, no phase 2",
    )
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
