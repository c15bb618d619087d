"""The adaptive recall threshold: recall only when the best match is close, as recent ones go."""

from __future__ import annotations

import numpy as np

from .sorted_window import SortedWindow


def _quantile(values: np.ndarray, q: float) -> float:
    """Linear-interpolation quantile (NumPy's default) via partition: cheap on small arrays."""
    position = q * (values.size - 1)
    low = int(np.floor(position))
    high = min(low + 1, values.size - 1)
    part = np.partition(values, (low, high))
    return float(part[low] + (part[high] - part[low]) * (position - low))


class AdaptiveThreshold:
    """Recall only when the best match is at least as close as a quantile of recent ones.

    With ``quantile=1.0`` every match recalls; with ``0.5`` only the better half.
    Before ``min_history`` matches have been seen, every match recalls.

    The recent values are also kept in order (one insertion and one removal per match,
    instead of a partition of the window at each); a NaN, which has no place in an
    order, sends the quantiles to NumPy's partition while it is in the window.
    """

    def __init__(self, quantile: float, window: int = 200, min_history: int = 10) -> None:
        self.quantile = quantile
        self.window = window
        self.min_history = min_history
        self._recent = SortedWindow()
        self._cut = np.inf
        self._median = 1.0

    def _refresh(self) -> None:
        count = len(self._recent)
        self._median = self._at(0.5) if count else 1.0
        enough = self.quantile < 1.0 and count >= self.min_history
        self._cut = self._at(self.quantile) if enough else np.inf

    def _at(self, q: float) -> float:
        """The ``q`` quantile of the recent values."""
        if self._recent.complete:
            return self._recent.quantile(q)
        return _quantile(np.fromiter(self._recent.arrived, float), q)  # a NaN in the window

    def admits(self, best: float) -> bool:
        return best <= self._cut

    def observe(self, best: float) -> None:
        if len(self._recent) == self.window:
            self._recent.drop_oldest()
        self._recent.append(float(best))
        self._refresh()

    def scale(self) -> float:
        """Typical best distance (median of recent ones), the unit of ``tau``."""
        return self._median

    def get_state(self) -> np.ndarray:
        return np.fromiter(self._recent.arrived, float)

    def set_state(self, values: np.ndarray) -> None:
        # tolist gives the same Python floats as float() of each, without a loop.
        held = np.asarray(values, dtype=np.float64).ravel().tolist()
        self._recent = SortedWindow(held[-self.window :])
        self._refresh()
