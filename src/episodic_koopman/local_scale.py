"""The series' local scale: the median absolute change over its newest observations.

Intervals are calibrated in units of it (see `episodic_koopman.intervals`), so they
follow a scale that grows or shrinks, while a median ignores a short burst of
volatility. `LocalScale` keeps it up to date as observations arrive.

>>> import numpy as np
>>> float(local_scale(np.array([[0.0], [1.0], [3.0], [3.5]]), np.ones(1))[0])
1.0
"""

from __future__ import annotations

import numpy as np

from .embedding import History
from .jit import kernel
from .sorted_ring import insert_sorted, replace_sorted

#: Observations over which the local scale (median absolute change) is taken: long
#: enough to ignore a burst of volatility, short enough to follow growth.
LOCAL_SCALE_SPAN = 576
#: The local scale's floor, as a fraction of the series' running standard deviation
#: (a constant stretch would otherwise make every later score infinite).
_SCALE_FLOOR = 0.01


def local_scale(recent: np.ndarray, running_scale: np.ndarray) -> np.ndarray:
    """The local scale ``(c,)`` of the newest rows ``recent`` ``(k, c)``, oldest first.

    The median absolute change between consecutive rows, floored at a small
    fraction of ``running_scale`` (the running standard deviation), which stands
    in alone before two rows are known.
    """
    if recent.shape[0] < 2:
        return running_scale.copy()
    changes = np.median(np.abs(np.diff(recent, axis=0)), axis=0)
    return np.maximum(changes, _SCALE_FLOOR * running_scale)


class LocalScale:
    """`local_scale` of a history's newest ``span + 1`` rows, kept up to date as rows arrive.

    Between two scored ticks a few rows arrive and as many leave, so the absolute
    changes are kept sorted per channel and moved one by one (in a compiled loop)
    instead of taking a new median of all of them: the same floats as `local_scale`
    (the middle change, or the two middle ones averaged as ``np.median`` does). A
    cache derived from the history alone, never saved: it is rebuilt whenever it
    cannot follow.
    """

    def __init__(self, span: int = LOCAL_SCALE_SPAN) -> None:
        self.span = span
        self._history: History | None = None
        self._count = 0  # the history's count when last followed
        self._newest = np.zeros(0)  # its newest row then
        # Per channel, the changes held: in arrival order (a ring from `_head`) and sorted.
        self._arrived = np.zeros((0, span))
        self._sorted = np.zeros((0, span))
        self._head = np.zeros(1, dtype=np.int64)  # the oldest change's slot in `_arrived`
        self._held = 0

    def of(self, history: History, running_scale: np.ndarray) -> np.ndarray:
        """``local_scale(history.last(k), running_scale)``, ``k = min(span + 1, held rows)``."""
        k = min(self.span + 1, history.count, history.length)
        if k < 2:
            return running_scale.copy()
        arrived = history.count - self._count
        floor = _SCALE_FLOOR * running_scale
        out = np.empty_like(floor)
        if history is self._history and 0 <= arrived < k:
            held = _follow(
                self._sorted,
                self._arrived,
                self._head,
                self._held,
                self._newest,
                history.last(arrived + 1),
                k - 1,
                floor,
                out,
            )
            if held >= 0:
                self._count, self._held = history.count, held
                return out
        # Another history, a gap, or a change that is not finite (sorting says nothing
        # of NaN, np.median does): start again from the rows themselves.
        recent = history.last(k)
        changes = np.abs(np.diff(recent, axis=0))
        if not np.isfinite(changes).all():
            self._history = None
            return local_scale(recent, running_scale)
        c = changes.shape[1]
        self._arrived = np.zeros((c, self.span))
        self._arrived[:, : k - 1] = changes.T
        self._sorted = np.zeros((c, self.span))
        self._sorted[:, : k - 1] = np.sort(changes.T, axis=1)
        self._head[0], self._held = 0, k - 1
        self._history, self._count = history, history.count
        self._newest = recent[-1].copy()
        _medians(self._sorted, self._held, floor, out)
        return out


@kernel
def _follow(ordered, arrived, head, held, newest, rows, size, floor, out):  # type: ignore[no-untyped-def]
    """Slide in the changes between consecutive ``rows`` (oldest first; the first is
    ``newest``, the row last followed), keeping the last ``size`` per channel; write the
    medians floored at ``floor`` to ``out`` and the last row to ``newest``. The count
    now held, or -1 with nothing moved if the first row is not ``newest``, a change is
    not finite, or more than ``size`` are held."""
    c, capacity = arrived.shape
    if held > size:
        return -1
    for j in range(c):
        if rows[0, j] != newest[j]:
            return -1
    for i in range(1, rows.shape[0]):
        for j in range(c):
            if not np.isfinite(abs(rows[i, j] - rows[i - 1, j])):
                return -1
    n, start = held, head[0]
    for i in range(1, rows.shape[0]):
        full = n >= size
        for j in range(c):
            value = abs(rows[i, j] - rows[i - 1, j])  # as np.abs(np.diff(...))
            if full:  # the oldest change leaves
                replace_sorted(ordered[j], n, arrived[j, start], value)
            else:
                insert_sorted(ordered[j], n, value)
            # Oldest first from `start`: once full, the new one follows the n - 1 left.
            arrived[j, (start + n) % capacity] = value
        if full:
            start = (start + 1) % capacity
        else:
            n += 1
    head[0] = start
    last = rows.shape[0] - 1
    for j in range(c):
        newest[j] = rows[last, j]
    _medians(ordered, n, floor, out)
    return n


@kernel
def _medians(ordered, n, floor, out):  # type: ignore[no-untyped-def]
    """``out[j]``: the median of ``ordered[j, :n]`` (sorted), as ``np.median`` gives it,
    or ``floor[j]`` if greater (``np.maximum``)."""
    for j in range(ordered.shape[0]):
        row = ordered[j]
        half = n // 2
        middle = row[half] if n % 2 else (row[half - 1] + row[half]) / 2
        f = floor[j]
        out[j] = middle if (middle >= f or middle != middle) else f


__all__ = ["LOCAL_SCALE_SPAN", "LocalScale", "local_scale"]
