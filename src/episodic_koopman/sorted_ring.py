"""A ring of the newest rows of a few cells, with every cell's values also kept sorted.

The conformal calibrator keeps the last ``window`` scores of each step ahead and
channel (a cell), and reads order statistics of them: a quantile for every
interval, a rank for every new score. One row arrives at a time, and one leaves
once the ring is full, so each cell's sorted values are moved by one insertion
and one deletion (a binary search and a shift) instead of sorting every cell again:
the same values as ``np.sort`` of the held rows, NaN last.

>>> import numpy as np
>>> ring = SortedRing(window=3, cells=2)
>>> for row in ([3.0, 0.5], [1.0, 0.25], [2.0, 0.75], [0.5, 1.0]):
...     ring.push(np.array(row))
>>> ring.sorted()[:, : ring.held].tolist()
[[0.5, 1.0, 2.0], [0.25, 0.75, 1.0]]
"""

from __future__ import annotations

import numpy as np

from .jit import kernel
from .state_checks import state_array, state_count


class SortedRing:
    """The newest ``window`` rows of ``cells`` floats (`values`, a ring) and each cell's
    held values in ascending order (`sorted`), until `restore` replaces them."""

    def __init__(self, window: int, cells: int) -> None:
        self.window = window
        self.values = np.zeros((window, cells))  # row ``i`` holds push ``i mod window``
        self.count = 0  # rows pushed
        # ``(cells, window)``: row k holds cell k's values sorted in its first `held`
        # columns; ``None`` until first read (then kept up to date by `push`).
        self._sorted: np.ndarray | None = None

    @property
    def held(self) -> int:
        return min(self.count, self.window)

    def push(self, row: np.ndarray) -> None:
        """Add ``row`` ``(cells,)`` (float64, contiguous), dropping the oldest once full."""
        slot = self.count % self.window
        if self._sorted is not None:
            _slide(self._sorted, self.held, self.values[slot], row, self.count >= self.window)
        self.values[slot] = row
        self.count += 1

    def sorted(self) -> np.ndarray:
        """``(cells, window)``: each cell's held values ascending (NaN last) in columns
        ``[0, held)``; the rest is not read."""
        if self._sorted is None:
            n = self.held
            ordered = np.zeros((self.values.shape[1], self.window))
            ordered[:, :n] = np.sort(self.values[:n].T, axis=1)
            self._sorted = ordered
        return self._sorted

    def restore(self, values: np.ndarray, count: int) -> None:
        """Hold ``values`` ``(window, cells)`` after ``count`` pushes (a saved state).

        ``ValueError`` (and nothing changed) for another shape or a negative count: the
        compiled loops index the ring by both.
        """
        shape = self.values.shape
        checked = state_array("SortedRing", {"values": values}, "values", shape)
        self.count = state_count("SortedRing", "count", count)
        self.values = checked
        self._sorted = None


@kernel
def _slide(ordered, held, leaving, arriving, full):  # type: ignore[no-untyped-def]
    """Per cell k of ``ordered`` (the first ``held`` columns sorted, NaN last), replace
    ``leaving[k]`` by ``arriving[k]`` if ``full``, else insert ``arriving[k]``."""
    for k in range(ordered.shape[0]):
        if full:
            replace_sorted(ordered[k], held, leaving[k], arriving[k])
        else:
            insert_sorted(ordered[k], held, arriving[k])


@kernel
def _upper_bound(row, n, value):  # type: ignore[no-untyped-def]
    """How many of ``row[:n]`` (sorted, NaN last) go before ``value``: the values not
    greater than it, or all ``n`` for a NaN ``value``."""
    if value != value:
        return n
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) >> 1
        if row[mid] <= value:  # (false for NaN)
            lo = mid + 1
        else:
            hi = mid
    return lo


@kernel
def lower_bound(row, n, value):  # type: ignore[no-untyped-def]
    """How many of ``row[:n]`` (sorted, NaN last) are less than ``value``."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) >> 1
        if row[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


@kernel
def insert_sorted(row, n, value):  # type: ignore[no-untyped-def]
    """Insert ``value`` into ``row[:n]`` (sorted, NaN last), which then holds ``n + 1``."""
    at = _upper_bound(row, n, value)
    _shift_up(row, at, n)
    row[at] = value


@kernel
def replace_sorted(row, n, leaving, arriving):  # type: ignore[no-untyped-def]
    """Replace one ``leaving`` by ``arriving`` in ``row[:n]`` (sorted, NaN last), moving
    only the values between the two places."""
    if leaving != leaving:  # NaN sits at the end
        gone = n - 1
    else:  # the first not less than it equals it
        gone = lower_bound(row, n, leaving)
    at = _upper_bound(row, n, arriving)
    if at > gone:  # the values in between move down one place
        _shift_down(row, gone, at - 1)
        row[at - 1] = arriving
    else:  # ... or up one place
        _shift_up(row, at, gone)
        row[at] = arriving


# Unsigned indices: NumPy's wraparound of negative ones costs a test per element.
@kernel
def _shift_down(row, start, stop):  # type: ignore[no-untyped-def]
    """``row[start:stop] = row[start + 1 : stop + 1]``, element by element."""
    one = np.uint64(1)
    for i in range(np.uint64(start), np.uint64(stop)):
        row[i] = row[i + one]


@kernel
def _shift_up(row, start, stop):  # type: ignore[no-untyped-def]
    """``row[start + 1 : stop + 1] = row[start:stop]``, element by element from the end."""
    one, i = np.uint64(1), np.uint64(stop)
    while i > np.uint64(start):
        row[i] = row[i - one]
        i -= one


__all__ = ["SortedRing", "insert_sorted", "replace_sorted"]
