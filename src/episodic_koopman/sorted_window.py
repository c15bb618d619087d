"""A sliding window of floats kept both in arrival order and in ascending order.

A few values arrive and as many leave between two reads, so moving them one by one
(an insertion and a deletion by bisection) costs less than sorting or partitioning
the window at each read. The median is ``np.median``'s float; a quantile interpolates
linearly between the two order statistics around it, as ``np.quantile`` does (up to
its rounding), by ``a + (b - a) * fraction``. NaN has no place in
an order: it is kept in arrival order only, and `complete` says whether one is held.

>>> window = SortedWindow([3.0, 1.0, 2.0])
>>> window.append(0.5)
>>> window.drop_oldest()
>>> list(window.arrived), window.ordered
([1.0, 2.0, 0.5], [0.5, 1.0, 2.0])
>>> window.median(), window.quantile(0.25)
(1.0, 0.75)
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Iterable


class SortedWindow:
    """Floats in arrival order (`arrived`) and, NaN aside, in ascending order (`ordered`)."""

    def __init__(self, values: Iterable[float] = ()) -> None:
        self.arrived: deque[float] = deque(values)
        self.ordered: list[float] = sorted(v for v in self.arrived if not math.isnan(v))

    def __len__(self) -> int:
        return len(self.arrived)

    @property
    def complete(self) -> bool:
        """Whether every value held is in `ordered` (no NaN)."""
        return len(self.ordered) == len(self.arrived)

    def append(self, value: float) -> None:
        self.arrived.append(value)
        if not math.isnan(value):
            insort(self.ordered, value)

    def drop_oldest(self) -> None:
        value = self.arrived.popleft()
        if not math.isnan(value):
            del self.ordered[bisect_left(self.ordered, value)]

    def slide(self, values: Iterable[float], size: int) -> None:
        """`append` each of ``values``, then `drop_oldest` until at most ``size`` are held."""
        for value in values:
            self.append(value)
        while len(self.arrived) > size:
            self.drop_oldest()

    def median(self) -> float:
        """``np.median`` of a complete window: the middle value, or the two middle ones'
        ``(a + b) / 2``."""
        ordered, n = self.ordered, len(self.ordered)
        return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2

    def quantile(self, q: float) -> float:
        """The ``q`` quantile of a complete window, by linear interpolation: ``a + (b - a) *
        fraction`` between the order statistics around ``q * (n - 1)``."""
        ordered = self.ordered
        position = q * (len(ordered) - 1)
        low = math.floor(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
