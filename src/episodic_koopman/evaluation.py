"""Rolling-origin backtests: every model sees the same stream, strictly causally.

Each model learns the series one observation at a time. At every origin ``o``
(from ``start``, every ``stride`` steps, while ``o + horizon`` is observed), each
model has learned exactly ``y[0..o]``. It then forecasts ``y[o+1..o+horizon]``.
No model sees a later value, not even to standardise or to choose a rank.

Metrics (over all origins and steps ahead):

* ``mae``, ``rmse``;
* ``mase``: MAE divided by the in-sample MAE of the seasonal naive forecast
  (lag ``season``, or 1) on ``y[0..start)``, the same constant for every model;
* ``smape``: mean of ``2|e| / (|y| + |yhat|)`` in percent (0 where both are 0);
* ``mae_by_h``: MAE per step ahead;
* ``coverage`` and ``width`` of the prediction intervals, when a model gives them;
* ``seconds``: learning plus forecasting time.

>>> import numpy as np
>>> truth = np.array([[1.0, 2.0], [3.0, 4.0]])
>>> pred = np.array([[1.0, 3.0], [2.0, 4.0]])
>>> float(mae(truth, pred)), float(rmse(truth, pred))
(0.5, 0.7071067811865476)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# -- metrics ---------------------------------------------------------------------------


def mae(truth: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(np.abs(truth - pred)))


def rmse(truth: np.ndarray, pred: np.ndarray) -> float:
    return float(np.sqrt(np.mean((truth - pred) ** 2)))


def smape(truth: np.ndarray, pred: np.ndarray) -> float:
    denom = np.abs(truth) + np.abs(pred)
    ratio = np.divide(2 * np.abs(truth - pred), denom, out=np.zeros_like(denom), where=denom > 0)
    return float(100 * np.mean(ratio))


def seasonal_naive_scale(history: np.ndarray, season: int | None) -> float:
    """In-sample MAE of the seasonal naive forecast (the MASE denominator)."""
    lag = season if season and season > 1 and history.size > season else 1
    if history.size <= lag:
        return float("nan")
    return float(np.mean(np.abs(history[lag:] - history[:-lag])))


def coverage(truth: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    return float(np.mean((truth >= lower) & (truth <= upper)))


# -- backtest --------------------------------------------------------------------------


@dataclass
class ModelRun:
    """One model's forecasts at every origin, with timings and (for ek) recalls."""

    forecasts: np.ndarray
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    seconds_learn: float = 0.0
    seconds_forecast: float = 0.0
    recalls: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class BacktestResult:
    """Forecasts of every model at the same origins, and their scores."""

    name: str
    values: np.ndarray
    origins: np.ndarray
    truth: np.ndarray
    horizon: int
    season: int | None
    start: int
    runs: dict[str, ModelRun]

    def scores(self) -> dict[str, dict[str, Any]]:
        scale = seasonal_naive_scale(self.values[: self.start], self.season)
        out: dict[str, dict[str, Any]] = {}
        for name, run in self.runs.items():
            err = np.abs(self.truth - run.forecasts)
            model_mae = float(err.mean()) if err.size else float("nan")
            row: dict[str, Any] = {
                "mae": model_mae,
                "rmse": rmse(self.truth, run.forecasts) if err.size else float("nan"),
                "mase": model_mae / scale if scale and np.isfinite(scale) else None,
                "smape": smape(self.truth, run.forecasts) if err.size else float("nan"),
                "mae_by_h": err.mean(axis=0).tolist() if err.size else [],
                "coverage": None,
                "width": None,
                "seconds": run.seconds_learn + run.seconds_forecast,
                "recall_rate": None,
            }
            if run.lower is not None and run.upper is not None and err.size:
                row["coverage"] = coverage(self.truth, run.lower, run.upper)
                row["width"] = float(np.mean(run.upper - run.lower))
            if run.recalls is not None and name.startswith("ek") and self.origins.size:
                row["recall_rate"] = len(run.recalls) / self.origins.size
            out[name] = row
        return out

    def to_json(self) -> dict[str, Any]:
        """The CLI's ``--json`` document."""

        def clean(value: Any) -> Any:
            if isinstance(value, float) and not np.isfinite(value):
                return None
            if isinstance(value, list):
                return [clean(v) for v in value]
            return value

        models = {
            name: {key: clean(value) for key, value in row.items()}
            for name, row in self.scores().items()
        }
        return {
            "dataset": self.name,
            "horizon": self.horizon,
            "season": self.season,
            "start": self.start,
            "n_origins": int(self.origins.size),
            "models": models,
        }

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2))


ModelFactory = Callable[[], Any]


def origins_for(
    n: int, horizon: int, start: int, stride: int, end: int | None = None
) -> np.ndarray:
    """Origins ``o`` with ``start <= o``, ``o + horizon < min(n, end)``, every ``stride``."""
    stop = n if end is None else min(n, end)
    return np.arange(start, stop - horizon, stride, dtype=np.int64)


def run_model(
    model: Any,
    values: np.ndarray,
    origins: np.ndarray,
    horizon: int,
    level: float = 0.9,
    on_step: Callable[[int], None] | None = None,
) -> ModelRun:
    """Stream ``values`` into ``model`` and forecast at each origin, causally."""
    has_intervals = hasattr(model, "predict") and hasattr(model, "is_fitted")
    forecasts = np.empty((origins.size, horizon))
    lower = np.empty_like(forecasts) if has_intervals else None
    upper = np.empty_like(forecasts) if has_intervals else None
    run = ModelRun(forecasts, lower, upper)
    origin_set = {int(o): i for i, o in enumerate(origins)}
    last = int(origins[-1]) if origins.size else -1
    for t in range(last + 1):
        started = time.perf_counter()
        model.learn_one(float(values[t]))
        run.seconds_learn += time.perf_counter() - started
        i = origin_set.get(t)
        if i is not None:
            started = time.perf_counter()
            if has_intervals:
                f = model.predict(horizon, level=level)
                forecasts[i], lower[i], upper[i] = f.mean, f.lower, f.upper  # type: ignore[index]
                if f.recall_applied and f.recalled:
                    best = max(f.recalled, key=lambda r: r.weight)
                    run.recalls.append(
                        {"origin": t, "matched_origin": best.origin, "weight": best.weight}
                    )
            else:
                forecasts[i] = model.forecast(horizon)
            run.seconds_forecast += time.perf_counter() - started
        if on_step is not None:
            on_step(t)
    return run


def backtest(
    values: np.ndarray,
    models: dict[str, ModelFactory],
    horizon: int,
    start: int,
    stride: int = 1,
    season: int | None = None,
    end: int | None = None,
    name: str = "series",
    level: float = 0.9,
    progress: bool = False,
) -> BacktestResult:
    """Rolling-origin backtest of fresh models from ``models`` (name to factory)."""
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("the series holds NaN or inf; fill or drop them before a backtest")
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    origins = origins_for(values.size, horizon, start, stride, end)
    if origins.size == 0:
        raise ValueError(
            f"no forecast origins: series of {values.size} values, start {start}, horizon {horizon}"
        )
    truth = np.stack([values[o + 1 : o + 1 + horizon] for o in origins])
    runs: dict[str, ModelRun] = {}
    if progress:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        steps = int(origins[-1]) + 1
        with Progress(
            TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(), transient=True
        ) as bar:
            for model_name, factory in models.items():
                task = bar.add_task(f"{name}: {model_name}", total=steps)
                runs[model_name] = run_model(
                    factory(), values, origins, horizon, level, lambda _t, k=task: bar.advance(k)
                )
    else:
        for model_name, factory in models.items():
            runs[model_name] = run_model(factory(), values, origins, horizon, level)
    return BacktestResult(name, values, origins, truth, horizon, season, start, runs)


def model_factories(
    names: Sequence[str], season: int | None, ek_params: dict[str, Any] | None = None
) -> dict[str, ModelFactory]:
    """Factories for ``ek``, ``ek-nomem`` and the peers (see `episodic_koopman.peers`)."""
    from .forecaster import EpisodicKoopman
    from .peers import make_peer

    params = dict(ek_params or {})
    factories: dict[str, ModelFactory] = {}
    for name in names:
        if name == "ek":
            factories[name] = lambda: EpisodicKoopman.from_flat(params)
        elif name == "ek-nomem":
            factories[name] = lambda: EpisodicKoopman.from_flat({**params, "memory": False})
        else:
            make_peer(name, season)  # fail early on unknown names or missing extras
            factories[name] = lambda n=name: make_peer(n, season)
    return factories
