"""The compiled sums and selections give NumPy's floats and orders bit for bit."""

import numpy as np

from episodic_koopman.numpy_order import add_reduce, keep_best


def test_add_reduce_adds_as_numpy_adds_a_row():
    rng = np.random.default_rng(1)
    for n in [*range(0, 300), 511, 1029, 4099]:
        values = rng.standard_normal(n) * 10 ** rng.uniform(-6, 6, n)
        rows = np.stack([values, values[::-1]])
        assert add_reduce(values, 0, n) == np.add.reduce(rows, axis=1)[0]
        if n > 3:  # a block inside a longer array
            assert add_reduce(values, 2, n - 3) == np.add.reduce(rows[:, 2 : n - 1], axis=1)[0]


def test_keep_best_selects_as_lexsort_orders():
    rng = np.random.default_rng(2)
    for _ in range(500):
        n, k = int(rng.integers(1, 40)), int(rng.integers(1, 8))
        values = rng.integers(0, 5, n).astype(float)  # many ties
        values[rng.random(n) < 0.15] = np.nan
        keys = rng.permutation(1000)[:n].astype(np.int64)
        size = min(n, k)
        best, best_keys, rows = np.empty(size), np.empty(size, np.int64), np.empty(size, np.int64)
        count = 0
        for i in range(n):
            count = keep_best(values[i], keys[i], i, best, best_keys, rows, count)
        expected = np.lexsort((keys, values))[:k]
        assert count == size
        np.testing.assert_array_equal(rows, expected)
        np.testing.assert_array_equal(best, values[expected])
