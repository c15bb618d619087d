"""Regenerate the accuracy tables: ek against ek-nomem and every peer, on every dataset.

Run with ``make bench-accuracy`` (or ``python benchmarks/bench_accuracy.py``).

Protocol (see README): rolling-origin backtests, strictly causal. Real series
report on their *second half*; their first half was used to choose ek's defaults.
Synthetic series report on the seeds below; the defaults were chosen on seed+100
realisations. ek runs with its defaults: ``EpisodicKoopman()``.

Scores: MAE (point forecasts); for models with intervals (ek, statsforecast's
peers), the weighted interval score of the median and the 50/80/95% intervals,
and each interval's coverage; and each model's fallback count (forecasts that
were the last value because the model could not fit). statsforecast's peers are
refitted every 50 origins on a trailing window of 1000 observations (MSTL: 6
weeks of hourly data); see `episodic_koopman.peers`.

``etth1_channels`` is a multichannel backtest: ek learns all 7 ETTh1 channels
jointly and is scored on ``OT`` (the ``etth1`` row is ``OT`` alone, with every
peer; the per-channel peers here are naive and seasonal naive, on each channel).

Writes ``results/accuracy.json`` and ``results/accuracy.md``, a figure per dataset
under ``docs/figures/``, and the tables into the README between its
``<!-- accuracy-table -->`` markers. ``--quick`` (or ``BENCH_QUICK=1``) runs a
subset on the last `QUICK_ORIGINS` origins only, for development: it writes
``results/accuracy_quick.*`` and leaves the README alone.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import peer_cache

from episodic_koopman import datasets, pin_threads
from episodic_koopman.evaluation import BacktestResult, backtest, model_factories
from episodic_koopman.peers import STATSFORECAST_PEERS, statsforecast_available

ROOT = Path(__file__).resolve().parents[1]
# name, horizon, season (None: the dataset's), stride between origins
CASES = [
    ("recurring_oscillators", 24, None, 2),
    ("switching_rotations", 24, None, 2),
    ("drifting_van_der_pol", 24, None, 2),
    ("stationary_control", 24, 24, 2),
    ("ilinet", 4, None, 1),
    ("bike_sharing", 24, None, 6),
    ("water_flow", 24, None, 1),
    ("airline", 12, None, 1),
    ("etth1", 24, None, 6),
    ("etth2", 24, None, 6),
    ("etth1_channels", 24, None, 6),
]
QUICK_CASES = ("stationary_control", "ilinet", "airline", "etth1", "etth1_channels")
#: In quick mode, only the last this many origins of the second half are scored.
QUICK_ORIGINS = 120
RECURRING = ("recurring_oscillators", "switching_rotations", "drifting_van_der_pol")
EK_MODELS = ("ek", "ek-nomem")
RIVER_PEERS = ("naive", "snaive", "holtwinters", "snarimax")
ALL_MODELS = (*EK_MODELS, *RIVER_PEERS, *STATSFORECAST_PEERS)
INTERVAL_MODELS = (*EK_MODELS, *STATSFORECAST_PEERS)
# Slowest first, so that two workers finish together (MSTL re-decomposes at every origin).
COST = {"mstl": 0, "autoarima": 1, "snarimax": 2, "autoets": 3}


def models_for(name: str, series: datasets.Series, season: int | None) -> list[str]:
    """The models run on a dataset: every peer, except where one cannot apply."""
    if series.channels is not None:
        return [*EK_MODELS, "naive", "snaive"]  # per-channel statsforecast peers: 7x the cost
    names = [*EK_MODELS, *RIVER_PEERS]
    if statsforecast_available():
        names += [p for p in STATSFORECAST_PEERS if p != "mstl" or (season or 0) > 1]
    return names


def case_start(n: int, horizon: int, stride: int, quick: bool) -> int:
    start = n // 2
    if quick:
        start = max(start, n - horizon - QUICK_ORIGINS * stride)
    return start


def run_task(task: tuple[tuple[str, int, int | None, int], str, bool, bool]) -> dict[str, Any]:
    """One model on one dataset (the unit of parallel work); peers may come from the cache."""
    pin_threads()
    (name, horizon, season, stride), model, quick, use_cache = task
    series = datasets.load(name)
    season = season or series.season
    start = case_start(len(series), horizon, stride, quick)
    key = None
    if use_cache and model not in EK_MODELS:
        protocol = {
            "dataset": name,
            "horizon": horizon,
            "season": season,
            "seasons": series.seasons,
            "start": start,
            "stride": stride,
            "channels": series.channels,
        }
        key = peer_cache.cache_key(model, series.values, protocol)
        run = peer_cache.load(key)
        if run is not None:
            return {"model": model, "run": run, "seconds": run.seconds_learn + run.seconds_forecast}
    started = time.perf_counter()
    result = backtest(
        series.values,
        model_factories([model], season, seasons=series.seasons),
        horizon,
        start=start,
        stride=stride,
        season=season,
        name=name,
        channels=series.channels,
        target="OT" if series.channels else None,
    )
    if key is not None:
        peer_cache.store(key, result.runs[model])
    return {"result": result, "seconds": time.perf_counter() - started}


def warm_up() -> None:
    """Load the compiled kernels before any case is timed: the learn_one column is a
    series' cost, and loading them is the process's (once, ~0.3 s; see the README)."""
    from episodic_koopman import EpisodicKoopman

    t = np.arange(800.0)
    model = EpisodicKoopman()
    model.learn_many(10 + np.sin(2 * np.pi * t / 24) + 0.01 * t + 0.1 * np.sin(t * t))
    model.predict(horizon=24, level=0.9)


def run_cases(cases: list, jobs: int, quick: bool, use_cache: bool = True) -> list[dict]:
    tasks, skipped, loaded = [], {}, {}
    for case in cases:
        name, _, season, _ = case
        try:
            series = loaded[name] = datasets.load(name)
        except FileNotFoundError as exc:
            skipped[name] = str(exc)
            continue
        for model in models_for(name, series, season or series.season):
            tasks.append((case, model, quick, use_cache))
    tasks.sort(key=lambda t: COST.get(t[1], 9))
    with ProcessPoolExecutor(jobs, initializer=warm_up) as pool:
        outputs = list(pool.map(run_task, tasks))
    merged: dict[str, BacktestResult] = {}
    seconds: dict[str, float] = {}
    for (case, *_), out in zip(tasks, outputs, strict=True):
        name = case[0]
        if "result" in out:  # ek and ek-nomem always run, so every dataset has one
            if name not in merged:
                merged[name] = out["result"]
            else:
                merged[name].runs.update(out["result"].runs)
        seconds[name] = seconds.get(name, 0.0) + out["seconds"]
    pairs = zip(tasks, outputs, strict=True)
    cached = [(case[0], out) for (case, *_), out in pairs if "run" in out]
    for name, out in cached:
        merged[name].runs[out["model"]] = out["run"]
    if cached:
        print(f"{len(cached)} peer runs from {peer_cache.CACHE} (--no-cache recomputes them)")
    docs = []
    for case in cases:
        name = case[0]
        if name in skipped:
            docs.append({"dataset": name, "skipped": skipped[name]})
            continue
        result = merged[name]
        result.runs = {m: result.runs[m] for m in ALL_MODELS if m in result.runs}
        doc = result.to_json()
        doc["cpu_seconds"] = seconds[name]
        docs.append(doc)
        if not quick and result.values.ndim == 1:
            plot(result, loaded[name])
    return docs


def plot(result: BacktestResult, series: datasets.Series) -> None:
    try:
        from episodic_koopman.plotting import plot_backtest
    except ImportError:
        return
    plot_backtest(
        result,
        ROOT / "docs" / "figures" / f"{result.name}.png",
        timestamps=series.timestamps,
        unit=series.unit or None,
    )


def _best(rows: dict[str, dict], key: str, among: tuple[str, ...]) -> tuple[str, float] | None:
    found = [(m, rows[m][key]) for m in among if m in rows and rows[m][key] is not None]
    return min(found, key=lambda item: item[1]) if found else None


def mae_table(docs: list[dict]) -> list[str]:
    peers = (*RIVER_PEERS, *STATSFORECAST_PEERS)
    models = (*EK_MODELS, *peers)
    lines = [
        "| dataset | h | "
        + " | ".join(models)
        + " | ek / ek-nomem | best peer | ek / best peer | ek learn_one µs/obs |",
        "|---|---|" + "---|" * (len(models) + 4),
    ]
    for doc in docs:
        if "skipped" in doc:
            lines.append(f"| {doc['dataset']} | skipped: {doc['skipped']} |")
            continue
        rows = doc["models"]
        best = min(r["mae"] for r in rows.values())
        cells = []
        for m in models:
            if m not in rows:
                cells.append("-")
                continue
            text = f"{rows[m]['mae']:.4g}"
            cells.append(f"**{text}**" if rows[m]["mae"] == best else text)
        ratio = rows["ek"]["mae"] / rows["ek-nomem"]["mae"]
        peer = _best(rows, "mae", peers)
        assert peer is not None
        lines.append(
            f"| {label(doc)} | {doc['horizon']} | "
            + " | ".join(cells)
            + f" | {ratio:.3f} | {peer[0]} | {rows['ek']['mae'] / peer[1]:.3f}"
            + f" | {_us(rows['ek'])} |"
        )
    return lines


def _us(row: dict) -> str:
    us = row.get("learn_us_per_obs")
    return "-" if us is None else f"{us:.0f}"


def interval_table(docs: list[dict]) -> list[str]:
    """WIS with the 50/80/95% coverages under it, and every model's fallbacks."""
    lines = [
        "| dataset | " + " | ".join(INTERVAL_MODELS) + " | fallbacks / origins |",
        "|---|" + "---|" * (len(INTERVAL_MODELS) + 1),
    ]
    for doc in docs:
        if "skipped" in doc:
            continue
        rows = doc["models"]
        best = _best(rows, "wis", INTERVAL_MODELS)
        cells = []
        for m in INTERVAL_MODELS:
            row = rows.get(m)
            if row is None or row["wis"] is None:
                cells.append("-")
                continue
            wis = f"{row['wis']:.4g}"
            wis = f"**{wis}**" if best and row["wis"] == best[1] else wis
            cov = "/".join(f"{row[f'coverage_{p}']:.2f}" for p in (50, 80, 95))
            cells.append(f"{wis} ({cov})")
        falls = ", ".join(
            f"{m} {r['fallbacks']}" for m, r in rows.items() if r["fallbacks"] is not None
        )
        tail = f" | {falls} / {doc['n_origins']} |"
        lines.append(f"| {label(doc)} | " + " | ".join(cells) + tail)
    return lines


def label(doc: dict) -> str:
    if doc.get("channels"):
        return f"{doc['dataset']} ({len(doc['channels'])} ch, on {doc['target']})"
    return doc["dataset"]


def markdown(docs: list[dict]) -> str:
    lines = [
        "MAE (lower is better; the best of each row in bold):",
        "",
        *mae_table(docs),
        "",
        "Weighted interval score (median + 50/80/95% intervals; lower is better) with the "
        "coverage of the 50/80/95% intervals in brackets; - where a model gives no intervals:",
        "",
        *interval_table(docs),
    ]
    recurring = [d for d in docs if d["dataset"] in RECURRING and "skipped" not in d]
    if recurring:
        mean_ratio = np.mean(
            [d["models"]["ek"]["mae"] / d["models"]["ek-nomem"]["mae"] for d in recurring]
        )
        lines.append("")
        lines.append(
            f"Mean ek / ek-nomem MAE over the recurring-regime synthetic sets: {mean_ratio:.3f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2, help="processes (one model+dataset each)")
    parser.add_argument("--only", default="", help="comma-separated dataset names")
    parser.add_argument(
        "--no-cache", action="store_true", help="recompute the peers (see peer_cache.py)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        default=os.environ.get("BENCH_QUICK", "") not in ("", "0"),
        help=f"{len(QUICK_CASES)} datasets, last {QUICK_ORIGINS} origins (also BENCH_QUICK=1)",
    )
    args = parser.parse_args()
    cases = [c for c in CASES if not args.only or c[0] in args.only.split(",")]
    if args.quick:
        cases = [c for c in cases if c[0] in QUICK_CASES]
    (ROOT / "results").mkdir(exist_ok=True)
    (ROOT / "docs" / "figures").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    docs = run_cases(cases, args.jobs, args.quick, use_cache=not args.no_cache)
    wall = time.perf_counter() - started
    stem = "accuracy_quick" if args.quick else "accuracy"
    summary = {"wall_seconds": wall, "jobs": args.jobs, "quick": args.quick, "datasets": docs}
    (ROOT / "results" / f"{stem}.json").write_text(json.dumps(summary, indent=2))
    table = markdown(docs)
    (ROOT / "results" / f"{stem}.md").write_text(table + "\n")
    if not args.only and not args.quick:
        update_readme(table)
    print(table)
    print(f"\n{len(cases)} datasets in {wall / 60:.1f} min of wall time ({args.jobs} jobs)")


def update_readme(table: str) -> None:
    """Replace the README's tables between the accuracy-table markers."""
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = "<!-- accuracy-table -->", "<!-- /accuracy-table -->"
    if start not in text or end not in text:
        return
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{table}\n{end}{tail}")


if __name__ == "__main__":
    main()
