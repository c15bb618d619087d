"""The plausible range of a forecast: the recent range, widened by a margin.

An expert can leave the data's range by far when its fit is near-defective: the
operator just after an outage in its window, or an analog aligned by a tiny
scale. Clipping every expert's forecast to the recent range widened by
``margin`` of it on each side bounds that damage. The mixture then scores the
clipped forecasts, so it learns from what it actually issued.

>>> import numpy as np
>>> lo, hi = recent_envelope(np.array([[1.0], [3.0], [2.0]]), margin=0.5)
>>> lo.tolist(), hi.tolist()
([0.0], [4.0])
"""

from __future__ import annotations

import numpy as np


def recent_envelope(recent: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` per channel: the range of ``recent`` rows, widened by ``margin`` x range."""
    low, high = recent.min(axis=0), recent.max(axis=0)
    widen = margin * (high - low)
    return low - widen, high + widen
