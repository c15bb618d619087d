"""SortedRing keeps each cell's held values as np.sort would order them."""

from __future__ import annotations

import numpy as np
import pytest

from episodic_koopman.sorted_ring import SortedRing


@pytest.mark.parametrize("window", [1, 2, 7, 50])
def test_sorted_cells_equal_a_new_sort_however_values_arrive(window: int) -> None:
    rng = np.random.default_rng(window)
    ring = SortedRing(window=window, cells=3)
    for step in range(4 * window + 5):
        # Rounded values make ties; NaN and inf must keep np.sort's places (NaN last).
        row = np.round(rng.standard_normal(3), 1)
        if rng.random() < 0.1:
            row[rng.integers(3)] = rng.choice([np.nan, np.inf, -np.inf])
        ring.push(row)
        if step % 3 == 0 or step < 3:
            n = ring.held
            expected = np.sort(ring.values[:n].T, axis=1)
            np.testing.assert_array_equal(ring.sorted()[:, :n], expected)
    assert ring.held == window and ring.count == 4 * window + 5


def test_restore_sorts_the_restored_values_again() -> None:
    ring = SortedRing(window=4, cells=2)
    for v in (3.0, 1.0, 2.0):
        ring.push(np.array([v, -v]))
    ring.sorted()
    other = SortedRing(window=4, cells=2)
    other.restore(ring.values, ring.count)
    other.push(np.array([0.5, -0.5]))
    ring.push(np.array([0.5, -0.5]))
    np.testing.assert_array_equal(other.sorted()[:, :4], ring.sorted()[:, :4])
    assert other.sorted()[:, :4].tolist() == [[0.5, 1.0, 2.0, 3.0], [-3.0, -2.0, -1.0, -0.5]]
