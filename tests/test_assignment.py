"""The compiled optimal assignment returns SciPy's assignments, ties included."""

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from episodic_koopman.assignment import assign


def _eigenvalue_costs(rng: np.random.Generator, n: int) -> np.ndarray:
    """Costs between two zero-padded spectra: rows and columns of padding tie."""
    query, other = np.zeros(n, complex), np.zeros(n, complex)
    rq, rc = rng.integers(0, n + 1, size=2)
    query[:rq] = rng.standard_normal(rq) + 1j * rng.standard_normal(rq)
    other[:rc] = rng.standard_normal(rc) + 1j * rng.standard_normal(rc)
    diff = query[:, None] - other[None, :]
    return diff.real**2 + diff.imag**2


@pytest.mark.parametrize("kind", ["normal", "small integers", "two values", "spectra"])
def test_assign_gives_scipys_assignment(kind):
    rng = np.random.default_rng(3)
    for _ in range(1500):
        n = int(rng.integers(0, 17))
        if kind == "normal":
            cost = rng.standard_normal((n, n))
        elif kind == "small integers":  # many optimal assignments
            cost = rng.integers(0, 3, (n, n)).astype(float)
        elif kind == "two values":
            cost = np.where(rng.random((n, n)) < 0.2, 0.5, 1.5)
        else:
            cost = _eigenvalue_costs(rng, n)
        padded = np.full((17, 17), np.nan)  # only the leading block is read
        padded[:n, :n] = cost
        columns = np.full(17, -7, dtype=np.int64)
        assert assign(padded, n, columns)
        np.testing.assert_array_equal(columns[:n], linear_sum_assignment(cost)[1])
        assert (columns[n:] == -7).all()


def test_assign_declines_costs_that_are_not_finite():
    cost = np.array([[1.0, np.inf], [0.0, 2.0]])
    columns = np.zeros(2, dtype=np.int64)
    assert not assign(cost, 2, columns)
    assert assign(cost, 1, columns) and columns[0] == 0
