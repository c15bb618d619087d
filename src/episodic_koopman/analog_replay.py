"""The analog correction's arithmetic (`corrections.Analog`) as one compiled pass.

Aligning what followed each matched window to the present (`corrections.align`),
holding the last step beyond the stored continuation, and the attention-weighted
mean and spread take about thirty NumPy calls on a few hundred floats; the
forecast makes them for every analog expert. This loop makes the same operations
in the same order, without fused multiply-adds: window sums in NumPy's order
(`episodic_koopman.reduction_order`), and the weighted sums over episodes from
zero, episode after episode, as ``einsum("e,ehc->hc")`` adds them. So the floats
are those of `corrections.align` and `corrections._weighted`.
"""

from __future__ import annotations

import math

import numpy as np

from .jit import kernel
from .reduction_order import leading_sum

#: `corrections.align`'s alignments, as the codes the kernel reads.
ALIGNMENT_CODES = {"none": 0, "last": 1, "additive": 2, "multiplicative": 3, "zscore": 4}


@kernel
def _window_moments(window: np.ndarray, mean: np.ndarray, std: np.ndarray) -> None:
    """Per channel, the mean and standard deviation of ``window (d, c)`` (C order), as
    ``corrections._window_mean`` and ``_window_std`` compute them."""
    d, c = window.shape
    squares = np.empty((d, c))
    for j in range(c):
        mean[j] = leading_sum(window, j) / d
    for t in range(d):
        for j in range(c):
            centered = window[t, j] - mean[j]
            squares[t, j] = centered * centered
    for j in range(c):
        std[j] = math.sqrt(leading_sum(squares, j) / d)


@kernel
def analog_forecast(
    continuation: np.ndarray,
    history_then: np.ndarray,
    now: np.ndarray,
    weights: np.ndarray,
    plain: np.ndarray,
    how: int,
    blend: float,
) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, spread)``, each ``(H, c)``, of `corrections.Analog` with alignment ``how``.

    ``continuation (k, H_mem, c)`` and ``history_then (k, d, c)`` are the matched
    episodes', ``now (d, c)`` the newest observations, ``weights (k,)`` their
    attention and ``plain (H, c)`` the plain forecast.
    """
    k, stored, c = continuation.shape
    horizon, d = plain.shape[0], history_then.shape[1]
    tracks = np.empty((k, stored, c))
    mean_now, std_now = np.empty(c), np.empty(c)
    mean_then, std_then = np.empty(c), np.empty(c)
    window = np.empty((d, c))
    if how >= 2:
        window[:, :] = now
        _window_moments(window, mean_now, std_now)
    for i in range(k):
        if how >= 2:
            window[:, :] = history_then[i]
            _window_moments(window, mean_then, std_then)
        for j in range(c):
            if how == 1:  # the last values matched
                shift = now[d - 1, j]
                for h in range(stored):
                    tracks[i, h, j] = continuation[i, h, j] - history_then[i, d - 1, j] + shift
            elif how == 2:  # the means matched
                for h in range(stored):
                    tracks[i, h, j] = continuation[i, h, j] - mean_then[j] + mean_now[j]
            elif how == 3:  # scaled by the ratio of the means, where both are positive
                if mean_then[j] > 0 and mean_now[j] > 0:
                    ratio = mean_now[j] / mean_then[j]
                    for h in range(stored):
                        tracks[i, h, j] = continuation[i, h, j] * ratio
                else:
                    for h in range(stored):
                        tracks[i, h, j] = continuation[i, h, j] - mean_then[j] + mean_now[j]
            elif how == 4:  # means and standard deviations matched, unless a window is flat
                size = abs(mean_then[j])
                if not size >= 1.0 and not np.isnan(size):
                    size = 1.0  # np.maximum(|mean|, 1.0), NaN kept
                ratio = 1.0
                if std_then[j] > 1e-12 * size:
                    ratio = std_now[j] / std_then[j]
                for h in range(stored):
                    tracks[i, h, j] = (continuation[i, h, j] - mean_then[j]) * ratio + mean_now[j]
            else:  # replayed as stored
                for h in range(stored):
                    tracks[i, h, j] = continuation[i, h, j]
    # Weighted over episodes, each track held at its last stored step beyond it.
    analog, spread = np.zeros((horizon, c)), np.zeros((horizon, c))
    for h in range(horizon):
        at = min(h, stored - 1)
        for j in range(c):
            total = 0.0
            for i in range(k):
                total = total + weights[i] * tracks[i, at, j]
            analog[h, j] = total
            square = 0.0
            for i in range(k):
                gap = tracks[i, at, j] - total
                square = square + weights[i] * (gap * gap)
            spread[h, j] = math.sqrt(square)
    if horizon > stored:
        # Beyond the stored continuation, carry the analog's offset from the plain forecast.
        for j in range(c):
            offset = analog[stored - 1, j] - plain[stored - 1, j]
            for h in range(stored, horizon):
                analog[h, j] = plain[h, j] + offset
    mean = np.empty((horizon, c))
    for h in range(horizon):
        for j in range(c):
            mean[h, j] = plain[h, j] + blend * (analog[h, j] - plain[h, j])
    return mean, spread


__all__ = ["ALIGNMENT_CODES", "analog_forecast"]
