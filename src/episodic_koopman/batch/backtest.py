"""Shared vs series memory, measured: a rolling-origin backtest of series that progress together."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..forecaster import EpisodicKoopman
from ..point_scores import coverage, mae, seasonal_naive_scale, smape
from ..threads import single_threaded
from .config import MEMORY_SCOPES
from .shared_memory import new_memory


@dataclass
class PanelBacktest:
    """Scores of a multi-series backtest, per memory scope (see `panel_backtest`)."""

    horizon: int
    scores: dict[str, dict[str, dict[str, float]]]  # scope -> group -> metric -> value

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for scope, groups in self.scores.items():
            for group, metrics in groups.items():
                out.append({"scope": scope, "series": group, **metrics})
        return out


def panel_backtest(
    panel: Sequence[np.ndarray],
    horizon: int,
    start: int,
    stride: int = 1,
    scopes: Sequence[str] = MEMORY_SCOPES,
    params: dict[str, Any] | None = None,
    offsets: Sequence[int] | None = None,
    level: float = 0.9,
    season: int | None = None,
) -> PanelBacktest:
    """Rolling-origin backtest of many series that progress in time together.

    Series ``i`` starts at global time ``offsets[i]`` (0 by default: a late
    ``offset`` makes a *new* series joining the others). At each global time ``t``,
    every active series learns its next value; then each series at one of its origins
    (local index ``o >= start``, every ``stride``, while ``o + horizon`` is observed)
    forecasts ``horizon`` steps. With ``"shared"`` all models share one memory, so a
    recall at time ``t`` sees exactly the episodes of any series completed by ``t``.

    Scores per scope, over all series (``"all"``), the series that join late
    (``"new"``, if any), and the others (``"old"``): ``mase`` (each series' MAE over
    its own in-sample seasonal naive MAE on its first ``start`` values, averaged over
    series), ``smape``, ``coverage`` of the ``level`` intervals, and ``recall_rate``.

    >>> t = np.arange(400.0)
    >>> panel = [np.sin(2 * np.pi * t / 20), 5 + 3 * np.sin(2 * np.pi * t / 20 + 1)]
    >>> bt = panel_backtest(panel, 4, start=100, stride=25, params={"delays": 8, "window": 32})
    >>> sorted(bt.scores), sorted(bt.scores["shared"]["all"])
    (['series', 'shared'], ['coverage', 'mase', 'recall_rate', 'smape'])
    """
    params = dict(params or {})
    values = [np.asarray(v, dtype=np.float64) for v in panel]
    offsets = list(offsets) if offsets is not None else [0] * len(values)
    if len(offsets) != len(values):
        raise ValueError("offsets must give one start time per series")
    origins = [np.arange(start, v.size - horizon, stride) for v in values]
    if any(o.size == 0 for o in origins):
        raise ValueError("every series needs at least one origin: shorter start or horizon")
    groups = {"all": list(range(len(values)))}
    if any(offsets):
        groups["new"] = [i for i, o in enumerate(offsets) if o > 0]
        groups["old"] = [i for i, o in enumerate(offsets) if o == 0]
    end = max(o + v.size for o, v in zip(offsets, values, strict=True))
    scores: dict[str, dict[str, dict[str, float]]] = {}
    for scope in scopes:
        if scope not in MEMORY_SCOPES:
            raise ValueError(f"scope must be one of {list(MEMORY_SCOPES)}, got {scope!r}")
        models = [EpisodicKoopman.from_flat(params) for _ in values]
        if scope == "shared":
            memory = new_memory(params)
            for i, model in enumerate(models):
                model.attach_memory(memory, source=i)
        preds = [np.empty((o.size, horizon, 3)) for o in origins]
        recalls = [0] * len(values)
        next_origin = [0] * len(values)
        with single_threaded():
            for t in range(end):
                for i, model in enumerate(models):
                    k = t - offsets[i]
                    if not 0 <= k < values[i].size:
                        continue
                    model.learn_one(float(values[i][k]))
                    j = next_origin[i]
                    if j < origins[i].size and origins[i][j] == k:
                        f = model.predict(horizon, level=level)
                        preds[i][j] = np.stack([f.mean, f.lower, f.upper], axis=1)
                        recalls[i] += int(f.recall_applied)
                        next_origin[i] += 1
        per_series = []
        for i, v in enumerate(values):
            truth = np.stack([v[o + 1 : o + 1 + horizon] for o in origins[i]])
            mean, lower, upper = preds[i][..., 0], preds[i][..., 1], preds[i][..., 2]
            scale = seasonal_naive_scale(v[:start], season)
            per_series.append(
                {
                    "mase": mae(truth, mean) / scale,
                    "smape": smape(truth, mean),
                    "coverage": coverage(truth, lower, upper),
                    "recall_rate": recalls[i] / origins[i].size,
                }
            )
        scores[scope] = {
            group: {
                metric: float(np.mean([per_series[i][metric] for i in members]))
                for metric in per_series[0]
            }
            for group, members in groups.items()
        }
    return PanelBacktest(horizon, scores)
