"""Peers' backtests, cached on disk between runs of ``make bench-accuracy``.

A peer's forecasts depend on the data, the backtest protocol and the peer's own
code, never on ek's. So a change to ek re-runs ek and ek-nomem only; the peers
(AutoARIMA, MSTL... most of the bench's 45 minutes) come from the cache as long
as its key matches: the dataset's values, horizon, season, start and stride,
the source of `episodic_koopman.peers` and of the backtest loop that runs every
model (`evaluation.backtest`, `run_model`, `origins_for`, `model_factories`),
and the versions of numpy, scipy, river and statsforecast. Entries are npz arrays plus a JSON header
(no pickle), under ``results/peer_cache/``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np

from episodic_koopman import evaluation, peers
from episodic_koopman.evaluation import ModelRun

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "results" / "peer_cache"


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def cache_key(model: str, values: np.ndarray, protocol: dict[str, Any]) -> str:
    """A digest of everything a peer's forecasts depend on."""
    digest = hashlib.sha256()
    digest.update(Path(peers.__file__).read_bytes())  # type: ignore[arg-type]
    for function in (
        evaluation.backtest,
        evaluation.run_model,
        evaluation.origins_for,
        evaluation.model_factories,
    ):
        digest.update(inspect.getsource(function).encode())
    values = np.ascontiguousarray(values, dtype=np.float64)
    digest.update(values.tobytes())
    digest.update(str(values.shape).encode())
    stamp = {
        "model": model,
        "protocol": protocol,
        "versions": {p: _version(p) for p in ("numpy", "river", "statsforecast", "scipy")},
    }
    digest.update(json.dumps(stamp, sort_keys=True).encode())
    return f"{model}-{digest.hexdigest()[:24]}"


def load(key: str) -> ModelRun | None:
    """The cached run, or None."""
    header, arrays = CACHE / f"{key}.json", CACHE / f"{key}.npz"
    if not (header.exists() and arrays.exists()):
        return None
    meta = json.loads(header.read_text())
    with np.load(arrays, allow_pickle=False) as npz:
        data = {name: npz[name] for name in npz.files}
    intervals = None
    if meta["levels"] is not None:
        levels = enumerate(meta["levels"])
        intervals = {level: (data[f"lower_{i}"], data[f"upper_{i}"]) for i, level in levels}
    return ModelRun(
        forecasts=data["forecasts"],
        lower=data.get("lower"),
        upper=data.get("upper"),
        seconds_learn=meta["seconds_learn"],
        seconds_forecast=meta["seconds_forecast"],
        intervals=intervals,
        channel_forecasts=data.get("channel_forecasts"),
        fallbacks=meta["fallbacks"],
    )


def store(key: str, run: ModelRun) -> None:
    """Cache a peer's run (peers record no recalls)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    arrays = {"forecasts": run.forecasts}
    for name in ("lower", "upper", "channel_forecasts"):
        value = getattr(run, name)
        if value is not None:
            arrays[name] = value
    levels = None
    if run.intervals is not None:
        levels = list(run.intervals)
        for i, level in enumerate(levels):
            arrays[f"lower_{i}"], arrays[f"upper_{i}"] = run.intervals[level]
    meta = {
        "seconds_learn": run.seconds_learn,
        "seconds_forecast": run.seconds_forecast,
        "fallbacks": run.fallbacks,
        "levels": levels,
    }
    np.savez(CACHE / f"{key}.npz", **arrays)
    (CACHE / f"{key}.json").write_text(json.dumps(meta))
