"""The dominant periods of a series, from its autocorrelation (for the seasonal experts)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .components import State
from .embedding import History


class PeriodFinder:
    """The dominant periods of the newest observations, from their autocorrelation.

    Every ``every`` observations (a multiple of the block), and at every boundary
    before ``early`` (a young series, whose periods are wanted as soon as three of
    them fit), the autocorrelation of the newest ``min(n, window)`` observations is
    computed by FFT: less each channel's mean, or with ``detrend`` its least-squares
    line (over a few periods a trend swamps a season), standardised per channel,
    averaged over channels. Its highest local maxima at lags from 2 to a third of
    the span, above ``threshold``, are the periods (the second one away from the
    first and its double). A pure function of the history at fixed counts.
    """

    def __init__(
        self,
        slots: int,
        every: int,
        window: int,
        threshold: float = 0.25,
        early: int = 0,
        detrend: bool = False,
    ) -> None:
        self.slots, self.every, self.window, self.threshold = slots, every, window, threshold
        self.early, self.detrend = early, detrend
        self.periods: list[int] = []

    def period(self, slot: int) -> int | None:
        return self.periods[slot] if slot < len(self.periods) else None

    def advance(self, history: History, n: int) -> None:
        if n % self.every and n >= self.early:
            return
        span = min(n, history.length, self.window)
        if span < 12:
            return
        self.periods = dominant_periods(
            history.last(span), self.slots, self.threshold, self.detrend
        )

    def get_state(self) -> State:
        return {"periods": list(self.periods)}, {}

    def set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.periods = [int(p) for p in meta["periods"]]


def autocorrelation(values: np.ndarray, detrend: bool = False) -> np.ndarray:
    """Autocorrelation of ``(n, c)`` values at lags ``0..n-1``, averaged over channels.

    With ``detrend``, less each channel's least-squares line rather than its mean.
    """
    n = values.shape[0]
    centred = values - values.mean(axis=0)
    if detrend:
        t = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
        centred = centred - np.outer(t, t @ centred / (t @ t))
    spectrum = np.fft.rfft(centred, n=2 * n, axis=0)
    acov = np.fft.irfft(spectrum * np.conj(spectrum), n=2 * n, axis=0)[:n]
    zero = acov[0]
    acf = np.where(zero > 0, acov / np.where(zero > 0, zero, 1.0), 0.0)
    return acf.mean(axis=1)


def dominant_periods(
    values: np.ndarray, slots: int, threshold: float = 0.25, detrend: bool = False
) -> list[int]:
    """Up to ``slots`` periods of ``(n, c)`` values: the best autocorrelation peaks.

    >>> t = np.arange(240.0)
    >>> dominant_periods(np.sin(2 * np.pi * t / 12)[:, None], 1)
    [12]
    """
    acf = autocorrelation(values, detrend)
    top = values.shape[0] // 3
    if top < 3:
        return []
    lags = np.arange(2, top)
    inner = acf[lags]
    peaks = (inner > acf[lags - 1]) & (inner >= acf[lags + 1]) & (inner > threshold)
    order = lags[peaks][np.argsort(-inner[peaks], kind="stable")]
    chosen: list[int] = []
    for lag in order.tolist():
        if all(abs(lag - p) > 2 and abs(lag - 2 * p) > 2 for p in chosen):
            chosen.append(int(lag))
        if len(chosen) == slots:
            break
    return chosen
