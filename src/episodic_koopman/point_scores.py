"""Point-forecast scores: MAE, RMSE, sMAPE, the MASE scale, and interval coverage.

Every score averages over all the entries of its arrays (origins and steps ahead).

>>> import numpy as np
>>> truth = np.array([[1.0, 2.0], [3.0, 4.0]])
>>> pred = np.array([[1.0, 3.0], [2.0, 4.0]])
>>> float(mae(truth, pred)), float(rmse(truth, pred))
(0.5, 0.7071067811865476)
"""

from __future__ import annotations

import numpy as np

from .interval_scores import interval_coverage


def mae(truth: np.ndarray, pred: np.ndarray) -> float:
    """Mean absolute error."""
    return float(np.mean(np.abs(truth - pred)))


def rmse(truth: np.ndarray, pred: np.ndarray) -> float:
    """Root mean squared error."""
    return float(np.sqrt(np.mean((truth - pred) ** 2)))


def smape(truth: np.ndarray, pred: np.ndarray) -> float:
    """Symmetric MAPE in percent: ``2|e| / (|y| + |yhat|)``, 0 where both are 0."""
    denom = np.abs(truth) + np.abs(pred)
    ratio = np.divide(2 * np.abs(truth - pred), denom, out=np.zeros_like(denom), where=denom > 0)
    return float(100 * np.mean(ratio))


def seasonal_naive_scale(history: np.ndarray, season: int | None) -> float:
    """In-sample MAE of the seasonal naive forecast (the MASE denominator)."""
    lag = season if season and season > 1 and history.size > season else 1
    if history.size <= lag:
        return float("nan")
    return float(np.mean(np.abs(history[lag:] - history[:-lag])))


#: Share of ``truth`` inside ``[lower, upper]`` (bounds included), as the interval
#: scores define it.
coverage = interval_coverage
