"""Forecasts recorded on fixed series and configurations, to prove refactors change nothing.

``python tests/golden_cases.py --write`` records them into ``tests/data/golden_forecasts.json``
(run it only when a change of forecasts is intended); `test_golden.py` compares, float for
float with ``==``. Parameters are given in the flat form, which every version accepts.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from episodic_koopman import EpisodicKoopman
from episodic_koopman.datasets import find_data_file, load_bike_sharing

GOLDEN = Path(__file__).parent / "data" / "golden_forecasts.json"
SMALL = {"delays": 8, "window": 32, "episode_horizon": 8, "stride": 2}
HORIZON = 30  # beyond every episode_horizon here, so the extension paths run too
CHECKPOINTS = 3  # forecasts read after each third of the series

CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "bike-defaults": ("bike", {}),
    "bike-small": ("bike", SMALL),
    "sines-small": ("sines", SMALL),
    "sines-analog": ("sines", {**SMALL, "strategy": "analog"}),
    "sines-residual": ("sines", {**SMALL, "strategy": "residual"}),
    "sines-transfer": ("sines", {**SMALL, "strategy": "transfer"}),
    "sines-rff": ("sines", {**SMALL, "lifting": "rff", "n_components": 16}),
    "sines-mixture-fast": ("sines", {**SMALL, "mixture_fast_decay": 0.3, "mode_weight": 0.5}),
    "sines-quantile": ("sines", {**SMALL, "recall_quantile": 0.5, "tau": 2.0, "top_k": 3}),
    "sines-page-hinkley": ("sines", {**SMALL, "drift_gate": "page_hinkley", "gate_span": 40}),
    "sines-kswin": ("sines", {**SMALL, "drift_gate": "kswin", "gate_span": 40}),
    "sines-no-memory": ("sines", {**SMALL, "memory": False}),
    "sines-hnsw": ("sines", {**SMALL, "hnsw_threshold": 40, "capacity": 60}),
    "sines-state-delays": ("sines", {**SMALL, "state_delays": 12, "memory_stride": 3}),
    "sines-energy-rank": ("sines", {**SMALL, "rank": 0.95, "alignment": "multiplicative"}),
    "sines-refit-none": ("sines", {**SMALL, "refit_every": 10, "stabilize": "none"}),
    "channels-small": ("channels", SMALL),
    "gaps-skip": ("gaps", {**SMALL, "missing": "skip"}),
    "gaps-ffill": ("gaps", {**SMALL, "missing": "ffill"}),
}


def make_model(params: dict[str, Any]) -> EpisodicKoopman:
    """A model from flat parameters (through the flat form where the library has one)."""
    from_flat = getattr(EpisodicKoopman, "from_flat", None)
    return from_flat(params) if from_flat is not None else EpisodicKoopman(**params)


def series(name: str) -> Any:
    """The observations of a case: an array, or a dict of channel arrays."""
    rng = np.random.default_rng(3)
    t = np.arange(900, dtype=np.float64)
    sines = np.sin(2 * np.pi * t / 25.0) + 0.5 * np.sin(2 * np.pi * t / 7.3)
    sines = sines + 0.05 * rng.standard_normal(t.size)
    # A regime change a third of the way in and a return later, so recall matters.
    sines[300:600] = 2.0 * np.sin(2 * np.pi * t[300:600] / 11.0) + 5.0
    if name == "bike":
        return load_bike_sharing().values[:1500].astype(np.float64)
    if name == "sines":
        return sines * 3 + 10
    if name == "channels":
        return {"a": sines, "b": np.cos(2 * np.pi * t / 17.0) + 0.1 * rng.standard_normal(t.size)}
    if name == "gaps":
        gaps = sines.copy()
        gaps[[5, 100, 101, 250, 420, 421, 422, 777]] = np.nan
        return gaps
    raise KeyError(name)


def chunks(values: Any, n: int) -> list[Any]:
    length = len(next(iter(values.values()))) if isinstance(values, dict) else len(values)
    cuts = np.linspace(0, length, n + 1).astype(int)
    if isinstance(values, dict):
        return [{k: v[a:b] for k, v in values.items()} for a, b in itertools.pairwise(cuts)]
    return [values[a:b] for a, b in itertools.pairwise(cuts)]


def summary(model: EpisodicKoopman) -> dict[str, Any]:
    out = model.predict(HORIZON).to_dict()
    return {
        "mean": out["mean"],
        "lower": out["lower"],
        "upper": out["upper"],
        "recalled": out["recalled"],
        "recall_applied": out["recall_applied"],
        "spectrum": out["spectrum"],
        "memory_size": model.memory_size,
        "coverage": model.coverage,
        "n_missing": model.n_missing,
    }


def run_case(name: str) -> list[dict[str, Any]]:
    """Learn the case's series in chunks; the summary after each chunk."""
    kind, params = CASES[name]
    model = make_model(params)
    results = []
    for chunk in chunks(series(kind), CHECKPOINTS):
        model.learn_many(chunk)
        results.append(summary(model))
    return results


def needs_data(name: str) -> bool:
    return CASES[name][0] == "bike"


def data_available() -> bool:
    return find_data_file("bike_sharing_hourly.csv") is not None


if __name__ == "__main__":
    if "--write" not in sys.argv:
        sys.exit("usage: python tests/golden_cases.py --write")
    recorded = {name: run_case(name) for name in CASES}
    GOLDEN.write_text(json.dumps(recorded, indent=None, separators=(",", ":")) + "\n")
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes, {len(recorded)} cases)")
