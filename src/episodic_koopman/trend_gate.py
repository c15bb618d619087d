"""The trend gate: detrend the operator's window only where a trend rules the series.

Fitting the operator on its window less each observable's least-squares line, and
adding the line's continuation back (`WindowedDMD` with ``detrend``), is what a
series whose level keeps climbing needs: a Koopman operator with its eigenvalues
pulled onto the unit circle cannot grow. Elsewhere it costs accuracy: a line fitted
to a few cycles of a stationary series is mostly noise, and its continuation is an
error (always on, first halves of ``make bench-accuracy``: stationary_control
+2.5%, ilinet +1.8%, etth1/etth2 +1.1%). A test of the slope's significance does not
tell the two apart, as errors that wander make any slope significant.

So the gate asks how *large* the trend is, not how sure: the rise of the line over
the operator's span (the last ``window + delays - 1`` observations) in units of the
standard deviation of what is left around it, averaged over channels. A climbing
series with a season on it (airline: 5 to 8 over the whole series) is far above
every window of the stationary, seasonal and wandering bench series (at most 0.8 on
the synthetic ones, 0.9 on ilinet, 2.5 on water flow; etth1 and etth2 pass 3 in 14%
and 6% of their windows). Each fit is taken detrended or not by the gate at its tick,
so forecasts stay a function of the observations.

>>> import numpy as np
>>> t = np.arange(120.0)
>>> season = np.sin(2 * np.pi * t / 12)
>>> rise = trend_rise(np.stack([0.2 * t + season], axis=1))
>>> bool(rise > TREND_GATE), bool(trend_rise(season[:, None]) > TREND_GATE)
(True, False)
"""

from __future__ import annotations

import math

import numpy as np

from .jit import kernel

#: The default gate (`ModelConfig.trend_gate`), in residual standard deviations of rise.
#: Chosen on the first halves of ``make bench-accuracy`` among 3 and 4 (airline's
#: first half has 6 fits: its MAE 16.91 -> 16.11 at 3, 16.93 at 4; etth1 +0.1% and
#: etth2 +0.2% at 3; every other dataset stays below 3 and is unchanged).
TREND_GATE = 3.0


@kernel
def trend_rise(values: np.ndarray) -> float:  # pragma: no cover (compiled)
    """The rise of each channel's least-squares line over ``values (k, c)``, in standard
    deviations of the residuals around it, averaged over channels (0 below 3 rows)."""
    k, c = values.shape
    if k < 3:
        return 0.0
    centre = 0.5 * (k - 1)
    moment = 0.0
    for i in range(k):
        moment += (i - centre) * (i - centre)
    total = 0.0
    for j in range(c):
        mean = 0.0
        for i in range(k):
            mean += values[i, j]
        mean /= k
        cov = 0.0
        for i in range(k):
            cov += (i - centre) * (values[i, j] - mean)
        slope = cov / moment
        squares = 0.0
        for i in range(k):
            r = values[i, j] - mean - slope * (i - centre)
            squares += r * r
        spread = math.sqrt(squares / k)
        if spread > 0.0:
            total += abs(slope) * k / spread
        elif slope != 0.0:  # an exact line: all trend
            total += math.inf
    return total / c
