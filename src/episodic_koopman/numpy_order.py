"""NumPy's orders of addition and of sorting, in compiled loops.

A compiled loop that must give NumPy's floats bit for bit adds in the order NumPy
adds: ``add.reduce`` of a contiguous row sums blocks of up to 128 values in eight
interleaved partial sums and halves longer rows (`add_reduce`). A selection of the
best few keeps ``lexsort``'s order: by value, NaN last, ties by key (`keep_best`).

>>> import numpy as np
>>> values = np.random.default_rng(0).standard_normal(300) * 1e8
>>> bool(add_reduce(values, 0, 300) == np.add.reduce(values))
True
"""

from __future__ import annotations

import numpy as np

from .jit import kernel


@kernel
def _partial_sum(values: np.ndarray, start: int, n: int) -> float:
    """`add_reduce` of at most 128 values: in order below 8, else in 8 interleaved
    partial sums and the rest in order."""
    if n < 8:
        total = -0.0
        for i in range(n):
            total += values[start + i]
        return total
    r0, r1, r2, r3 = values[start], values[start + 1], values[start + 2], values[start + 3]
    r4, r5, r6, r7 = values[start + 4], values[start + 5], values[start + 6], values[start + 7]
    i = 8
    while i < n - n % 8:
        r0 += values[start + i]
        r1 += values[start + i + 1]
        r2 += values[start + i + 2]
        r3 += values[start + i + 3]
        r4 += values[start + i + 4]
        r5 += values[start + i + 5]
        r6 += values[start + i + 6]
        r7 += values[start + i + 7]
        i += 8
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        total += values[start + i]
        i += 1
    return total


@kernel
def add_reduce(values: np.ndarray, start: int, n: int) -> float:
    """``values[start:start + n].sum()`` added as NumPy's ``add.reduce`` adds a contiguous
    row: blocks of at most 128 (`_partial_sum`), halved (at a multiple of 8) above that
    and the halves added. Without recursion, which compiled code cannot cache safely:
    the halving runs on a stack of blocks, each block's sum pushed once both halves'
    are known."""
    if n <= 128:
        return _partial_sum(values, start, n)
    depth = 3 * 64
    starts, sizes = np.empty(depth, dtype=np.int64), np.empty(depth, dtype=np.int64)
    halved = np.zeros(depth, dtype=np.bool_)
    sums = np.empty(64)
    top, n_sums = 0, 0
    starts[0], sizes[0] = start, n
    while top >= 0:
        s, m = starts[top], sizes[top]
        if m <= 128:
            sums[n_sums] = _partial_sum(values, s, m)
            n_sums += 1
            top -= 1
        elif halved[top]:  # both halves are summed: add them, left first
            halved[top] = False
            sums[n_sums - 2] = sums[n_sums - 2] + sums[n_sums - 1]
            n_sums -= 1
            top -= 1
        else:
            half = m // 2
            half -= half % 8
            halved[top] = True
            starts[top + 1], sizes[top + 1] = s + half, m - half  # the right half, second
            starts[top + 2], sizes[top + 2] = s, half
            halved[top + 1] = halved[top + 2] = False
            top += 2
    return sums[0]


@kernel
def _before(a: float, a_id: int, b: float, b_id: int) -> bool:
    """Whether ``(a, a_id)`` sorts before ``(b, b_id)`` as ``lexsort`` orders them (NaN last)."""
    if a < b:
        return True
    if a > b:
        return False
    if a == b or (np.isnan(a) and np.isnan(b)):
        return a_id < b_id
    return np.isnan(b)


@kernel
def keep_best(
    value: float,
    key: int,
    row: int,
    values: np.ndarray,
    keys: np.ndarray,
    rows: np.ndarray,
    count: int,
) -> int:
    """Insert ``(value, key)`` (with its ``row``) into the ``count`` best held in order, at
    most ``values.size`` of them; returns the new count."""
    size = values.shape[0]
    if count == size and not _before(value, key, values[size - 1], keys[size - 1]):
        return count
    at = min(count, size - 1)
    while at > 0 and _before(value, key, values[at - 1], keys[at - 1]):
        values[at], keys[at], rows[at] = values[at - 1], keys[at - 1], rows[at - 1]
        at -= 1
    values[at], keys[at], rows[at] = value, key, row
    return min(count + 1, size)
