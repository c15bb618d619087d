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
* ``coverage`` and ``width`` of the prediction intervals at ``level`` (0.9), when
  a model gives them at any level (ek);
* ``wis``: the weighted interval score of the median (the point forecast) and
  the 50/80/95% central intervals, and ``coverage_50``, ``coverage_80``,
  ``coverage_95``, for every model that gives intervals (ek, statsforecast's
  peers; ``None`` otherwise), see `episodic_koopman.interval_scores`;
* ``fallbacks``: how many forecasts were the last value because the model could
  not fit (``None`` for models that never fit);
* ``mae_by_channel`` in a multichannel backtest;
* ``seconds``: learning plus forecasting time.

The scores themselves are in `episodic_koopman.point_scores` and
`episodic_koopman.interval_scores`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .interval_scores import WIS_LEVELS, weighted_interval_score
from .point_scores import coverage, mae, rmse, seasonal_naive_scale, smape

# -- backtest --------------------------------------------------------------------------


@dataclass
class ModelRun:
    """One model's forecasts at every origin, with timings and (for ek) recalls.

    ``forecasts`` and the bounds are ``(origins, horizon)`` on the target channel;
    ``intervals`` maps each of `WIS_LEVELS` to its ``(lower, upper)`` (``None``
    when the model gives no intervals); ``channel_forecasts`` is ``(origins,
    horizon, channels)`` for a multichannel backtest. ``fallbacks`` counts the
    origins at which the model gave the last value because it could not fit
    (``None`` for models that never fit anything).
    """

    forecasts: np.ndarray
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    seconds_learn: float = 0.0
    seconds_forecast: float = 0.0
    recalls: list[dict[str, Any]] = field(default_factory=list)
    intervals: dict[float, tuple[np.ndarray, np.ndarray]] | None = None
    channel_forecasts: np.ndarray | None = None
    fallbacks: int | None = None
    n_learned: int = 0  # observations learned, for the cost per observation


@dataclass
class BacktestResult:
    """Forecasts of every model at the same origins, and their scores.

    ``values`` and ``truth`` are the target channel's; a multichannel backtest
    also keeps every channel in ``channel_values`` (``(n, channels)``).
    """

    name: str
    values: np.ndarray
    origins: np.ndarray
    truth: np.ndarray
    horizon: int
    season: int | None
    start: int
    runs: dict[str, ModelRun]
    channels: list[str] | None = None
    target: str | None = None
    channel_values: np.ndarray | None = None

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
                "wis": None,
                **{coverage_key(level): None for level in WIS_LEVELS},
                "fallbacks": run.fallbacks,
                "seconds": run.seconds_learn + run.seconds_forecast,
                "learn_us_per_obs": (
                    1e6 * run.seconds_learn / run.n_learned if run.n_learned else None
                ),
                "recall_rate": None,
            }
            if run.lower is not None and run.upper is not None and err.size:
                row["coverage"] = coverage(self.truth, run.lower, run.upper)
                row["width"] = float(np.mean(run.upper - run.lower))
            if run.intervals is not None and err.size:
                row["wis"] = weighted_interval_score(self.truth, run.forecasts, run.intervals)
                for level, (lower, upper) in run.intervals.items():
                    row[coverage_key(level)] = coverage(self.truth, lower, upper)
            if run.recalls is not None and name.startswith("ek") and self.origins.size:
                row["recall_rate"] = len(run.recalls) / self.origins.size
            if self.channels is not None and run.channel_forecasts is not None:
                truth = self._channel_truth()
                row["mae_by_channel"] = {
                    ch: mae(truth[..., j], run.channel_forecasts[..., j])
                    for j, ch in enumerate(self.channels)
                }
            out[name] = row
        return out

    def _channel_truth(self) -> np.ndarray:
        assert self.channel_values is not None
        return np.stack([self.channel_values[o + 1 : o + 1 + self.horizon] for o in self.origins])

    def to_json(self) -> dict[str, Any]:
        """The CLI's ``--json`` document."""

        def clean(value: Any) -> Any:
            if isinstance(value, float) and not np.isfinite(value):
                return None
            if isinstance(value, list):
                return [clean(v) for v in value]
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            return value

        models = {
            name: {key: clean(value) for key, value in row.items()}
            for name, row in self.scores().items()
        }
        doc: dict[str, Any] = {
            "dataset": self.name,
            "horizon": self.horizon,
            "season": self.season,
            "start": self.start,
            "n_origins": int(self.origins.size),
            "interval_levels": list(WIS_LEVELS),
            "models": models,
        }
        if self.channels is not None:
            doc["channels"] = list(self.channels)
            doc["target"] = self.target
        return doc

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2))


def coverage_key(level: float) -> str:
    """The JSON key of an interval level's coverage: ``coverage_50`` for 0.5."""
    return f"coverage_{round(100 * level)}"


ModelFactory = Callable[[], Any]


def origins_for(
    n: int, horizon: int, start: int, stride: int, end: int | None = None
) -> np.ndarray:
    """Origins ``o`` with ``start <= o``, ``o + horizon < min(n, end)``, every ``stride``."""
    stop = n if end is None else min(n, end)
    return np.arange(start, stop - horizon, stride, dtype=np.int64)


def _is_ek(model: Any) -> bool:
    # ek (and anything with its contract) gives intervals at any level and learns channels.
    return hasattr(model, "predict") and hasattr(model, "is_fitted")


def run_model(
    factory: ModelFactory,
    values: np.ndarray,
    origins: np.ndarray,
    horizon: int,
    level: float = 0.9,
    on_step: Callable[[int], None] | None = None,
    channels: Sequence[str] | None = None,
    target: int = 0,
) -> ModelRun:
    """Stream ``values`` into a fresh model and forecast at each origin, causally.

    ``values`` is ``(n,)``, or ``(n, channels)`` with ``channels`` named: then ek
    learns every channel jointly, and any other model runs as one univariate
    copy per channel. Scores are taken on channel ``target``.
    """
    grid = values[:, None] if values.ndim == 1 else values
    n_channels = grid.shape[1]
    multichannel = values.ndim == 2
    first = factory()
    joint = _is_ek(first)
    models = [first] if joint else [first] + [factory() for _ in range(n_channels - 1)]
    with_bands = joint or all(hasattr(m, "forecast_intervals") for m in models)
    shape = (origins.size, horizon, n_channels)
    means = np.empty(shape)
    bands = {lv: (np.empty(shape), np.empty(shape)) for lv in WIS_LEVELS} if with_bands else None
    main = (np.empty(shape), np.empty(shape)) if joint else None
    recalls: list[dict[str, Any]] = []
    ek_fallbacks = 0
    seconds_learn = seconds_forecast = 0.0
    origin_set = {int(o): i for i, o in enumerate(origins)}
    last = int(origins[-1]) if origins.size else -1
    names = list(channels) if channels is not None else None
    for t in range(last + 1):
        started = time.perf_counter()
        if joint and multichannel:
            assert names is not None
            first.learn_one({ch: float(v) for ch, v in zip(names, grid[t], strict=True)})
        elif joint:
            first.learn_one(float(grid[t, 0]))
        else:
            for j, model in enumerate(models):
                model.learn_one(float(grid[t, j]))
        seconds_learn += time.perf_counter() - started
        i = origin_set.get(t)
        if i is not None:
            started = time.perf_counter()
            if joint:
                f = first.predict(horizon, level=level)
                means[i] = f.mean.reshape(horizon, n_channels)
                main[0][i] = f.lower.reshape(horizon, n_channels)  # type: ignore[index]
                main[1][i] = f.upper.reshape(horizon, n_channels)  # type: ignore[index]
                ek_fallbacks += int(f.fallback)
                assert bands is not None
                for lv, (lower, upper) in bands.items():
                    g = first.predict(horizon, level=lv)
                    lower[i] = g.lower.reshape(horizon, n_channels)
                    upper[i] = g.upper.reshape(horizon, n_channels)
                if f.recall_applied and f.recalled:
                    best = max(f.recalled, key=lambda r: r.weight)
                    recalls.append(
                        {"origin": t, "matched_origin": best.origin, "weight": best.weight}
                    )
            else:
                for j, model in enumerate(models):
                    if bands is None:
                        means[i, :, j] = model.forecast(horizon)
                        continue
                    mean, peer_bands = model.forecast_intervals(horizon, WIS_LEVELS)
                    means[i, :, j] = mean
                    for lv, (lower, upper) in bands.items():
                        lower[i, :, j], upper[i, :, j] = peer_bands[lv]
            seconds_forecast += time.perf_counter() - started
        if on_step is not None:
            on_step(t)
    if joint:
        fallbacks: int | None = ek_fallbacks
    elif all(hasattr(m, "fallbacks") for m in models):
        fallbacks = sum(int(m.fallbacks) for m in models)
    else:
        fallbacks = None
    return ModelRun(
        forecasts=means[..., target],
        lower=main[0][..., target] if main is not None else None,
        upper=main[1][..., target] if main is not None else None,
        seconds_learn=seconds_learn,
        seconds_forecast=seconds_forecast,
        n_learned=last + 1,
        recalls=recalls,
        intervals=(
            {lv: (lo[..., target], hi[..., target]) for lv, (lo, hi) in bands.items()}
            if bands is not None
            else None
        ),
        channel_forecasts=means if multichannel else None,
        fallbacks=fallbacks,
    )


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
    channels: Sequence[str] | None = None,
    target: str | None = None,
) -> BacktestResult:
    """Rolling-origin backtest of fresh models from ``models`` (name to factory).

    ``values`` is one series ``(n,)``, or ``(n, len(channels))`` for a
    multichannel backtest scored on the channel ``target`` (default: the last).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim not in (1, 2):
        raise ValueError(f"values must be 1-D or 2-D, got shape {values.shape}")
    if values.ndim == 2:
        if channels is None or len(channels) != values.shape[1]:
            raise ValueError("a 2-D series needs one channel name per column")
        target = target if target is not None else channels[-1]
        if target not in channels:
            raise ValueError(f"target {target!r} is not a channel; channels: {list(channels)}")
    if not np.all(np.isfinite(values)):
        raise ValueError("the series holds NaN or inf; fill or drop them before a backtest")
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    n = values.shape[0]
    origins = origins_for(n, horizon, start, stride, end)
    if origins.size == 0:
        raise ValueError(
            f"no forecast origins: series of {n} values, start {start}, horizon {horizon}"
        )
    index = list(channels).index(target) if values.ndim == 2 and channels and target else 0
    series = values[:, index] if values.ndim == 2 else values
    truth = np.stack([series[o + 1 : o + 1 + horizon] for o in origins])
    runs: dict[str, ModelRun] = {}
    names = list(channels) if values.ndim == 2 and channels is not None else None

    def run(factory: ModelFactory, on_step: Callable[[int], None] | None = None) -> ModelRun:
        return run_model(factory, values, origins, horizon, level, on_step, names, index)

    if progress:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        steps = int(origins[-1]) + 1
        with Progress(
            TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(), transient=True
        ) as bar:
            for model_name, factory in models.items():
                task = bar.add_task(f"{name}: {model_name}", total=steps)
                runs[model_name] = run(factory, lambda _t, k=task: bar.advance(k))
    else:
        for model_name, factory in models.items():
            runs[model_name] = run(factory)
    return BacktestResult(
        name,
        series,
        origins,
        truth,
        horizon,
        season,
        start,
        runs,
        channels=names,
        target=target if names is not None else None,
        channel_values=values if names is not None else None,
    )


def model_factories(
    names: Sequence[str],
    season: int | None,
    ek_params: dict[str, Any] | None = None,
    seasons: Sequence[int] | None = None,
) -> dict[str, ModelFactory]:
    """Factories for ``ek``, ``ek-nomem`` and the peers (see `episodic_koopman.peers`).

    ``seasons`` are the periods of MSTL (default: ``season`` alone).
    """
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
            make_peer(name, season, seasons)  # fail early on unknown names or missing extras
            factories[name] = lambda n=name: make_peer(n, season, seasons)
    return factories
