"""Probabilistic scores of central prediction intervals: interval score, WIS and coverage.

The weighted interval score (WIS) is the one the influenza forecasting hubs use
(Bracher et al. 2021). It combines the median ``m`` and ``K`` central intervals
``[l_k, u_k]`` at levels ``1 - alpha_k``::

    IS_alpha(l, u; y) = (u - l) + (2 / alpha) (l - y) 1{y < l} + (2 / alpha) (y - u) 1{y > u}
    WIS = (0.5 |y - m| + sum_k (alpha_k / 2) IS_alpha_k) / (K + 0.5)

Lower is better. With no intervals it is the absolute error of the median, and
it approximates the CRPS as ``K`` grows. The backtests score the median and the
50%, 80% and 95% intervals (`WIS_LEVELS`), averaged over origins and steps ahead.

>>> import numpy as np
>>> y, m = np.array([4.0]), np.array([2.0])
>>> float(interval_score(y, np.array([1.0]), np.array([3.0]), alpha=0.5)[0])  # 2 + (2/0.5) * 1
6.0
>>> round(weighted_interval_score(y, m, {0.5: (np.array([1.0]), np.array([3.0]))}), 4)
1.6667
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

#: Central interval levels scored by the backtests (alphas 0.5, 0.2 and 0.05).
WIS_LEVELS: tuple[float, ...] = (0.5, 0.8, 0.95)


def interval_score(
    truth: np.ndarray, lower: np.ndarray, upper: np.ndarray, alpha: float
) -> np.ndarray:
    """Elementwise interval score of the central ``1 - alpha`` interval ``[lower, upper]``."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    below = np.clip(lower - truth, 0.0, None)  # (l - y) 1{y < l}
    above = np.clip(truth - upper, 0.0, None)  # (y - u) 1{y > u}
    return (upper - lower) + (2.0 / alpha) * (below + above)


def weighted_interval_score(
    truth: np.ndarray,
    median: np.ndarray,
    intervals: Mapping[float, tuple[np.ndarray, np.ndarray]],
) -> float:
    """Mean WIS of ``median`` and the central intervals ``{level: (lower, upper)}``."""
    truth = np.asarray(truth, dtype=np.float64)
    total = 0.5 * np.abs(truth - np.asarray(median, dtype=np.float64))
    for level, (lower, upper) in intervals.items():
        alpha = 1.0 - level
        total = total + (alpha / 2.0) * interval_score(
            truth, np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64), alpha
        )
    return float(np.mean(total / (len(intervals) + 0.5)))


def interval_coverage(truth: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Share of ``truth`` inside ``[lower, upper]`` (bounds included)."""
    return float(np.mean((truth >= lower) & (truth <= upper)))
