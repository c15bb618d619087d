"""Classical seasonal indices of a window of observations, and how much they explain.

A classical decomposition removes the trend by a centred moving average over one
period (a 2 x period one for an even period) and averages what is left phase by
phase: differences for an additive season, ratios for a multiplicative one. Both
are one pass over the window in a compiled loop. The additive fit also returns its
F statistic, which compares nearby periods (a broad autocorrelation peak is found a
few lags off the season) and tells a season from noise.

>>> import numpy as np
>>> t = np.arange(48)
>>> rows = (10.0 + 0.5 * t + np.array([1.0, -2.0, 0.0, 1.0])[t % 4])[:, None]
>>> out = np.empty((4, 1))
>>> fit = additive_indices(rows, 4, 0, out)
>>> out[:, 0].round(9).tolist(), bool(fit == np.inf)
([1.0, -2.0, 0.0, 1.0], True)
"""

from __future__ import annotations

import numpy as np

from .jit import kernel


@kernel
def additive_indices(rows: np.ndarray, period: int, first: int, out: np.ndarray) -> float:
    """Classical additive seasonal indices of ``rows (N, c)`` at ``period`` into ``out
    (period, c)``, by phase ``(first + i) % period`` of row ``i``: the mean per phase of
    the rows less their centred moving average (a 2 x period one for an even period),
    less the indices' mean. Phases with no detrended row get 0.

    Returns how well the indices explain the detrended rows (all channels together):
    the F statistic of a fit by phase, ``(explained / (period - 1)) / (rest / (rows -
    period))``, infinite for an exact fit and 0 where it is undefined; a measure to
    compare nearby periods by."""
    n, c = rows.shape
    half = period // 2
    even = period % 2 == 0
    for ch in range(c):
        for p in range(period):
            out[p, ch] = 0.0
    counts = np.zeros(period)
    squares = 0.0  # of the detrended rows
    for ch in range(c):
        window = 0.0
        for j in range(2 * half):  # the window of row `half`, but its newest row
            window += rows[j, ch]
        for i in range(half, n - half):
            window += rows[i + half, ch]  # the window is rows i - half .. i + half
            centred = window
            if even:  # the two ends weigh one half each
                centred -= 0.5 * (rows[i - half, ch] + rows[i + half, ch])
            p = (first + i) % period
            detrended = rows[i, ch] - centred / period
            out[p, ch] += detrended
            squares += detrended * detrended
            if ch == 0:
                counts[p] += 1.0
            window -= rows[i - half, ch]
    explained = 0.0
    for ch in range(c):
        mean = 0.0
        for p in range(period):
            if counts[p] > 0.0:
                explained += out[p, ch] * out[p, ch] / counts[p]  # (sum)^2 / count
                out[p, ch] /= counts[p]
            mean += out[p, ch]
        mean /= period
        for p in range(period):
            out[p, ch] -= mean
    fitted = c * (n - 2 * half)
    rest = squares - explained
    if period < 2 or fitted <= c * period or not squares > 0.0:
        return 0.0
    if not rest > 1e-12 * squares:  # the indices are the whole of it: an exact season
        return np.inf
    return (explained / (c * (period - 1))) / (rest / (fitted - c * period))


@kernel
def ratio_indices(rows: np.ndarray, period: int, first: int, out: np.ndarray) -> None:
    """Classical multiplicative seasonal indices of positive ``rows (N, c)`` into ``out
    (period, c)``: the mean per phase of the rows over their centred moving average (as
    `additive_indices`), over the indices' mean. Phases with no row get 1."""
    n, c = rows.shape
    half = period // 2
    even = period % 2 == 0
    counts = np.zeros(period)
    for ch in range(c):
        for p in range(period):
            out[p, ch] = 0.0
        window = 0.0
        for j in range(2 * half):
            window += rows[j, ch]
        for i in range(half, n - half):
            window += rows[i + half, ch]
            centred = window
            if even:
                centred -= 0.5 * (rows[i - half, ch] + rows[i + half, ch])
            p = (first + i) % period
            out[p, ch] += rows[i, ch] / (centred / period)
            if ch == 0:
                counts[p] += 1.0
            window -= rows[i - half, ch]
    for ch in range(c):
        mean = 0.0
        for p in range(period):
            out[p, ch] = out[p, ch] / counts[p] if counts[p] > 0.0 else 1.0
            mean += out[p, ch]
        mean /= period
        for p in range(period):
            out[p, ch] /= mean
