"""`leading_sum`: NumPy's sum over the leading axis, in NumPy's order, for kernels.

A compiled loop that replaces ``np.add.reduce(x, axis=0)`` must add in the order
NumPy does to give the same floats. For a C-ordered ``(n, m)`` array that order
depends on ``m``: with several columns, NumPy adds row after row to a zero start;
with one column, the rows are contiguous and NumPy sums them pairwise (eight
running sums over blocks of up to 128, halves beyond), again onto a zero start.

>>> import numpy as np
>>> x = np.random.default_rng(0).exponential(size=(10, 1)) * 10.0 ** np.arange(10)[:, None]
>>> bool(leading_sum(x, 0) == np.add.reduce(x, axis=0)[0])
True
"""

from __future__ import annotations

import numpy as np

from .jit import kernel

#: NumPy's block of pairwise summation (``PW_BLOCKSIZE``).
_BLOCK = 128


@kernel
def leading_sum(x: np.ndarray, column: int) -> float:
    """``np.add.reduce(x, axis=0)[column]`` of a C-ordered ``(n, m)`` array."""
    if x.shape[1] == 1:
        return 0.0 + _pairwise(x[:, 0], 0, x.shape[0])
    total = 0.0
    for i in range(x.shape[0]):
        total = total + x[i, column]
    return total


@kernel
def _pairwise(a: np.ndarray, start: int, n: int) -> float:
    """NumPy's pairwise sum of ``a[start : start + n]``: blocks of up to 128 summed as
    `_block_sum`, halves beyond added (a tree walked with a stack: a cached kernel
    may not call itself)."""
    if n <= _BLOCK:
        return _block_sum(a, start, n)
    # Frames of the tree, parents below children: (start, n, children pushed so far).
    starts, sizes, stages = np.empty(64, np.int64), np.empty(64, np.int64), np.empty(64, np.int64)
    values = np.empty(64)  # sums of finished subtrees, left below right
    starts[0], sizes[0], stages[0] = start, n, 0
    depth, held = 1, 0
    while depth:
        top = depth - 1
        first, size = starts[top], sizes[top]
        half = size // 2
        half -= half % 8
        if size <= _BLOCK:
            values[held] = _block_sum(a, first, size)
            held, depth = held + 1, depth - 1
        elif stages[top] == 0:  # the left half first
            stages[top] = 1
            starts[depth], sizes[depth], stages[depth] = first, half, 0
            depth += 1
        elif stages[top] == 1:  # then the right half
            stages[top] = 2
            starts[depth], sizes[depth], stages[depth] = first + half, size - half, 0
            depth += 1
        else:  # both done: their sum, left plus right
            values[held - 2] = values[held - 2] + values[held - 1]
            held, depth = held - 1, depth - 1
    return values[0]


@kernel
def _block_sum(a: np.ndarray, start: int, n: int) -> float:
    """NumPy's sum of at most 128 terms: in order below 8, else eight running sums."""
    if n < 8:
        total = 0.0
        for i in range(start, start + n):
            total = total + a[i]
        return total
    r0, r1, r2, r3 = a[start], a[start + 1], a[start + 2], a[start + 3]
    r4, r5, r6, r7 = a[start + 4], a[start + 5], a[start + 6], a[start + 7]
    i = 8
    while i < n - n % 8:
        j = start + i
        r0, r1, r2, r3 = r0 + a[j], r1 + a[j + 1], r2 + a[j + 2], r3 + a[j + 3]
        r4, r5, r6, r7 = r4 + a[j + 4], r5 + a[j + 5], r6 + a[j + 6], r7 + a[j + 7]
        i += 8
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        total = total + a[start + i]
        i += 1
    return total


__all__ = ["leading_sum"]
