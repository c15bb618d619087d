"""Known answers for the interval score, WIS and coverage, computed by hand."""

import numpy as np
import pytest

from episodic_koopman.evaluation import backtest
from episodic_koopman.interval_scores import (
    WIS_LEVELS,
    interval_coverage,
    interval_score,
    weighted_interval_score,
)


def test_interval_score_inside_below_and_above():
    lower, upper = np.array([1.0, 1.0, 1.0]), np.array([3.0, 3.0, 3.0])
    truth = np.array([2.0, 0.0, 5.0])
    # inside: the width 2; below by 1 at alpha 0.2: 2 + 10 * 1; above by 2: 2 + 10 * 2
    assert interval_score(truth, lower, upper, 0.2).tolist() == pytest.approx([2.0, 12.0, 22.0])
    # on a bound counts as inside
    assert interval_score(np.array([3.0]), lower[:1], upper[:1], 0.05)[0] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="alpha"):
        interval_score(truth, lower, upper, 1.0)


def test_wis_of_the_median_and_three_intervals():
    y, median = np.array([10.0]), np.array([8.0])
    intervals = {
        0.5: (np.array([7.0]), np.array([9.0])),  # IS = 2 + 4 * 1 = 6, weight 0.25 -> 1.5
        0.8: (np.array([6.0]), np.array([11.0])),  # IS = 5, weight 0.1 -> 0.5
        0.95: (np.array([4.0]), np.array([13.0])),  # IS = 9, weight 0.025 -> 0.225
    }
    # (0.5 * |10 - 8| + 1.5 + 0.5 + 0.225) / (3 + 0.5)
    assert weighted_interval_score(y, median, intervals) == pytest.approx(3.225 / 3.5)


def test_wis_without_intervals_is_the_absolute_error_and_it_averages():
    y, median = np.array([1.0, 4.0]), np.array([2.0, 1.0])
    assert weighted_interval_score(y, median, {}) == pytest.approx(2.0)  # (1 + 3) / 2
    # Perfect degenerate intervals at the truth score 0.
    assert weighted_interval_score(y, y, {0.5: (y, y), 0.95: (y, y)}) == 0.0


def test_coverage_counts_bounds_as_inside():
    truth = np.array([0.0, 1.0, 2.0, 3.0])
    assert interval_coverage(truth, np.ones(4), 2 * np.ones(4)) == pytest.approx(0.5)


class _LastValueWithBands:
    """Last value, with central intervals of half-width 1, 2, 3 at 50, 80, 95%."""

    def __init__(self) -> None:
        self.last = 0.0
        self.fallbacks = 0

    def learn_one(self, y: float, x: dict | None = None) -> None:
        self.last = y

    def forecast(self, horizon: int, xs: list | None = None) -> list[float]:
        return [self.last] * horizon

    def forecast_intervals(self, horizon, levels):
        half = {0.5: 1.0, 0.8: 2.0, 0.95: 3.0}
        point = [self.last] * horizon
        return point, {
            lv: ([v - half[lv] for v in point], [v + half[lv] for v in point]) for lv in levels
        }


def test_backtest_scores_wis_and_coverage_by_hand():
    # On y = t the forecast misses by h at step h.
    # h=1: 0.5*1 + 0.25*2 + 0.1*4 + 0.025*6 = 1.55 (every interval covers);
    # h=2: 0.5*2 + 0.25*(2 + 4*1) + 0.1*4 + 0.025*6 = 3.05 (the 50% one misses).
    result = backtest(np.arange(40.0), {"stub": _LastValueWithBands}, horizon=2, start=20)
    row = result.to_json()["models"]["stub"]
    assert row["wis"] == pytest.approx((1.55 + 3.05) / 2 / 3.5)
    assert (row["coverage_50"], row["coverage_80"], row["coverage_95"]) == (0.5, 1.0, 1.0)
    assert row["fallbacks"] == 0
    assert row["coverage"] is None  # no 90% interval from a peer
    assert result.to_json()["interval_levels"] == list(WIS_LEVELS)
