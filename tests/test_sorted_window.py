"""The sorted sliding window gives the order statistics of a full sort, float for float."""

from __future__ import annotations

import numpy as np

from episodic_koopman.recall_threshold import _quantile
from episodic_koopman.sorted_window import SortedWindow


def test_order_statistics_equal_a_full_sorts_as_values_come_and_go():
    rng = np.random.default_rng(0)
    window = SortedWindow()
    held: list[float] = []
    for value in rng.standard_normal(400).round(2).tolist():  # rounding makes ties
        window.append(value)
        held.append(value)
        while len(held) > 37:
            window.drop_oldest()
            held.pop(0)
        assert list(window.arrived) == held
        assert window.median() == float(np.median(held))
        for q in (0.0, 0.1, 0.5, 0.9, 1.0):
            assert window.quantile(q) == _quantile(np.array(held), q)  # partition-based
            assert abs(window.quantile(q) - np.quantile(held, q)) < 1e-12


def test_a_nan_is_held_in_arrival_order_only():
    window = SortedWindow([1.0, float("nan"), 2.0])
    assert not window.complete and window.ordered == [1.0, 2.0]
    window.drop_oldest()
    window.drop_oldest()  # the NaN leaves
    assert window.complete and window.ordered == [2.0]
