"""Batch forecasting throughput: ``episodic-koopman forecast`` on many series, and AutoETS.

One command runs everything and prints one table:

    python benchmarks/bench_batch.py                 # 10^4 series of length 1,000, h=24
    python benchmarks/bench_batch.py --n-series 200  # a quick run

The synthetic file (hourly series with daily and weekly cycles whose amplitudes
switch, each at its own level and scale) is written once as Parquet. Each
configuration runs as its own process, timed from start to end (reading the file
and writing the forecasts included), while the resident memory of the process and
all its children is sampled every 0.2 s: "peak MB" is the largest total seen, and
"CPU s/series" the CPU time of all its processes per series. The configurations are
``--jobs 1``, ``--jobs 2`` and ``--engine dask`` (a ``LocalCluster`` of 2
single-threaded worker processes), then statsforecast's ``AutoETS(season_length=24)``
on the same file (``n_jobs=2``) when statsforecast is installed. AutoETS takes about
0.2-0.6 s per series here; ``--peer-series M`` runs it on the file's first M series
only (its throughput is per series, so it is comparable). The forecasts of the three
episodic-koopman runs are checked to be identical.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def make_file(path: Path, n_series: int, length: int, seed: int = 0) -> None:
    """Hourly series: daily and weekly cycles whose amplitudes switch, AR(1) noise, own scale."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    t = np.arange(length)
    stamps = pd.date_range("2024-01-01", periods=length, freq="h")
    ids, values = [], []
    for i in range(n_series):
        switch = int(rng.integers(length // 4, 3 * length // 4))
        daily = np.where(t < switch, *rng.uniform(0.5, 1.5, 2))
        weekly = np.where(t < switch, *rng.uniform(0.0, 0.8, 2))
        phase = rng.uniform(0, 2 * np.pi, 2)
        noise = np.empty(length)
        noise[0] = 0.0
        shocks = 0.1 * rng.standard_normal(length)
        for k in range(1, length):
            noise[k] = 0.6 * noise[k - 1] + shocks[k]
        unit = (
            daily * np.sin(2 * np.pi * t / 24 + phase[0])
            + weekly * np.sin(2 * np.pi * t / 168 + phase[1])
            + noise
        )
        values.append(rng.uniform(-10, 10) + 10 ** rng.uniform(0, 2) * unit)
        ids.append(np.full(length, f"s{i:05d}"))
    frame = pd.DataFrame(
        {
            "unique_id": np.concatenate(ids),
            "ds": np.tile(stamps.to_numpy(), n_series),
            "y": np.concatenate(values),
        }
    )
    frame.to_parquet(path, index=False)


def run_measured(command: list[str]) -> dict[str, float]:
    """Run ``command``: wall seconds, CPU seconds and peak total RSS (MB) of its process tree.

    CPU seconds (user + system, every process of the tree) do not depend on what else
    runs on the machine, unlike wall seconds: on a shared machine they are the fairer
    measure of cost.
    """
    import resource

    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    cpu: dict[int, float] = {}  # latest CPU seconds seen per process of the tree
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        try:
            root = psutil.Process(process.pid)
        except psutil.NoSuchProcess:
            return
        while not done.is_set():
            total = 0
            try:
                for p in [root, *root.children(recursive=True)]:
                    try:
                        total += p.memory_info().rss
                        times = p.cpu_times()
                        cpu[p.pid] = times.user + times.system
                    except psutil.NoSuchProcess:
                        pass
            except psutil.NoSuchProcess:
                break
            peak = max(peak, total)
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = process.communicate()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{stderr.decode()[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    waited = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "seconds": seconds,
        "cpu_seconds": max(waited, sum(cpu.values())),
        "peak_mb": peak / 2**20,
    }


def autoets_main(path: str, out: str, n_series: int, n_jobs: int) -> None:
    """Forecast the first ``n_series`` series of ``path`` with AutoETS (runs in a subprocess)."""
    import pandas as pd
    from statsforecast import StatsForecast
    from statsforecast.models import AutoETS

    frame = pd.read_parquet(path)
    keep = frame["unique_id"].drop_duplicates().iloc[:n_series]
    frame = frame[frame["unique_id"].isin(keep)]
    model = StatsForecast(models=[AutoETS(season_length=24)], freq="h", n_jobs=n_jobs)
    model.forecast(df=frame, h=24, level=[90]).to_parquet(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-series", type=int, default=10_000)
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--horizon", type=int, default=24)
    parser.add_argument("--peer-series", type=int, default=None, help="AutoETS on the first M")
    parser.add_argument("--workdir", default=None, help="Keep the file and outputs here.")
    parser.add_argument("--skip", nargs="*", default=[], help="jobs1 jobs2 dask autoets")
    parser.add_argument("--json", default=None, help="Also write the results here.")
    parser.add_argument("--autoets-worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.autoets_worker:
        path, out, n, jobs = args.autoets_worker
        autoets_main(path, out, int(n), int(jobs))
        return

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="ek-bench-batch-"))
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / f"series_{args.n_series}x{args.length}.parquet"
    if not data.exists():
        started = time.perf_counter()
        make_file(data, args.n_series, args.length)
        print(f"wrote {data} in {time.perf_counter() - started:.1f} s", flush=True)
    cli = [sys.executable, "-c", "from episodic_koopman.cli import main; main()"]
    base = [*cli, "forecast", str(data), "--horizon", str(args.horizon), "--no-progress"]
    configs = {
        "jobs1": ("episodic-koopman --jobs 1", ["--jobs", "1"]),
        "jobs2": ("episodic-koopman --jobs 2", ["--jobs", "2"]),
        "dask": (
            "episodic-koopman --engine dask (LocalCluster, 2 workers)",
            ["--engine", "dask", "--jobs", "2"],
        ),
    }
    rows: list[dict] = []
    outputs: dict[str, Path] = {}
    for name, (label, extra) in configs.items():
        if name in args.skip:
            continue
        out = workdir / f"out_{name}.parquet"
        print(f"running {label} ...", flush=True)
        measured = run_measured([*base, *extra, "--output", str(out)])
        rows.append({"name": name, "label": label, "series": args.n_series, **measured})
        outputs[name] = out
        print(f"  {measured['seconds']:.1f} s, peak {measured['peak_mb']:.0f} MB", flush=True)
    peer_n = min(args.peer_series or args.n_series, args.n_series)
    if "autoets" not in args.skip:
        try:
            import statsforecast  # noqa: F401
        except ImportError:
            print("statsforecast is not installed: no AutoETS row", flush=True)
        else:
            out = workdir / "out_autoets.parquet"
            label = "statsforecast AutoETS(season_length=24), n_jobs=2"
            print(f"running {label} on {peer_n} series ...", flush=True)
            command = [sys.executable, __file__, "--autoets-worker", str(data), str(out)]
            measured = run_measured([*command, str(peer_n), "2"])
            rows.append({"name": "autoets", "label": label, "series": peer_n, **measured})
            print(f"  {measured['seconds']:.1f} s, peak {measured['peak_mb']:.0f} MB", flush=True)

    identical = None
    if len(outputs) > 1:
        import pandas as pd

        frames = [pd.read_parquet(p) for p in outputs.values()]
        identical = all(f.equals(frames[0]) for f in frames[1:])

    reference = next((r for r in rows if r["name"] == "jobs1"), rows[0] if rows else None)
    print()
    print(
        f"batch forecast, {args.n_series} series x {args.length} observations, "
        f"h={args.horizon}, {os.cpu_count()} cores"
    )
    header = (
        f"{'configuration':58} {'series':>7} {'seconds':>9} {'series/s':>9} "
        f"{'ratio':>6} {'CPU s/series':>12} {'peak MB':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        rate = r["series"] / r["seconds"]
        ratio = rate / (reference["series"] / reference["seconds"]) if reference else float("nan")
        r["series_per_s"], r["ratio"] = rate, ratio
        print(
            f"{r['label']:58} {r['series']:>7} {r['seconds']:>9.1f} {rate:>9.2f} "
            f"{ratio:>6.2f} {r['cpu_seconds'] / r['series']:>12.3f} {r['peak_mb']:>8.0f}"
        )
    print("ratio: series/s relative to the first row (jobs 1 when it ran)")
    print("CPU s/series: user + system seconds of every process of the run, per series")
    if identical is not None:
        print(f"episodic-koopman forecasts identical across engines: {identical}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "identical": identical}, indent=2))


if __name__ == "__main__":
    main()
