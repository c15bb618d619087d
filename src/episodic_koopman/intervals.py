"""Prediction intervals by online split-conformal calibration, per step ahead.

Every episode issues a forecast for ``1..H`` steps. Once its horizon has
passed, its absolute errors become nonconformity scores, one per step ahead and
channel. The scores are *normalised* (Papadopoulos et al. 2008) by
``u = 1 + s / s_bar``. Here ``s`` is the spread (weighted standard deviation)
of the recalled episodes' corrections at that origin (0 without recall), and
``s_bar`` is its running mean. The half-width at step ``h`` is the conformal
quantile of the last ``window`` scores at ``h``, times the present ``u``. So
intervals widen when the recalled pasts disagree and narrow when they agree,
and the coverage guarantee of normalised conformal prediction is kept.

Beyond the calibrated horizon ``H`` the half-width grows as ``sqrt(h / H)``.
Before ``min_samples`` episodes have been scored, the interval is the Gaussian
one, ``z * (running standard deviation of the series)``.

>>> import numpy as np
>>> cal = ConformalCalibrator(horizon=2, n_channels=1, window=50, min_samples=5)
>>> for e in [0.1, -0.2, 0.3, -0.1, 0.2, 0.15]:
...     cal.update(np.full((2, 1), e), spread=np.zeros((2, 1)))
>>> hw = cal.half_width(0.8, spread=np.zeros((2, 1)), steps=2, fallback_scale=np.ones(1))
>>> hw.ravel().tolist()
[0.3, 0.3]
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

_SPREAD_SMOOTHING = 0.05


class ConformalCalibrator:
    """Rolling per-horizon conformal calibration with empirical coverage tracking."""

    def __init__(self, horizon: int, n_channels: int, window: int = 200, min_samples: int = 20):
        self.horizon = horizon
        self.n_channels = n_channels
        self.window = window
        self.min_samples = min_samples
        self._scores = np.zeros((window, horizon, n_channels))
        self._count = 0
        self._spread_mean = np.zeros((horizon, n_channels))
        self._hits = np.zeros((horizon, n_channels))
        self._scored = 0
        self._sorted: np.ndarray | None = None  # scores sorted per step, until the next update

    @property
    def n_samples(self) -> int:
        return min(self._count, self.window)

    def _normalizer(self, spread: np.ndarray) -> np.ndarray:
        ref = np.where(self._spread_mean > 0, self._spread_mean, 1.0)
        return 1.0 + np.where(self._spread_mean > 0, spread / ref, 0.0)

    def update(
        self,
        errors: np.ndarray,
        spread: np.ndarray,
        lower: np.ndarray | None = None,
        upper: np.ndarray | None = None,
        realised: np.ndarray | None = None,
    ) -> None:
        """Score one episode's errors ``(H, c)``; count its interval's hits if given."""
        self._scores[self._count % self.window] = np.abs(errors) / self._normalizer(spread)
        self._count += 1
        self._sorted = None
        if np.any(spread > 0):
            seen = self._spread_mean > 0
            self._spread_mean = np.where(
                seen,
                (1 - _SPREAD_SMOOTHING) * self._spread_mean + _SPREAD_SMOOTHING * spread,
                spread,
            )
        if lower is not None and upper is not None and realised is not None:
            self._hits += (realised >= lower) & (realised <= upper)
            self._scored += 1

    def half_width(
        self, level: float, spread: np.ndarray, steps: int, fallback_scale: np.ndarray
    ) -> np.ndarray:
        """Half-widths ``(steps, c)`` of intervals at ``level`` for the present spread."""
        if self.n_samples < self.min_samples:
            z = NormalDist().inv_cdf(0.5 + level / 2)
            return np.repeat(z * fallback_scale[None, :], steps, axis=0)
        n = self.n_samples
        if self._sorted is None:
            self._sorted = np.sort(self._scores[:n], axis=0)
        # Split-conformal quantile: the ceil((n + 1) level)-th smallest score.
        rank = min(math.ceil((n + 1) * level), n)
        scores = self._sorted[rank - 1]
        normalizer = self._normalizer(_pad(spread, self.horizon))
        widths = np.empty((steps, self.n_channels))
        calibrated = min(steps, self.horizon)
        widths[:calibrated] = scores[:calibrated] * normalizer[:calibrated]
        if steps > self.horizon:
            growth = np.sqrt(np.arange(self.horizon + 1, steps + 1) / self.horizon)
            widths[self.horizon :] = widths[self.horizon - 1] * growth[:, None]
        return widths

    def coverage(self) -> float | None:
        """Fraction of realised values inside the intervals issued at episode origins."""
        if self._scored == 0:
            return None
        return float(self._hits.sum() / (self._scored * self.horizon * self.n_channels))

    def coverage_by_step(self) -> list[float] | None:
        if self._scored == 0:
            return None
        return (self._hits.mean(axis=1) / self._scored).tolist()

    def get_state(self) -> dict[str, np.ndarray]:
        return {
            "scores": self._scores.copy(),
            "counts": np.array([self._count, self._scored], dtype=np.int64),
            "spread_mean": self._spread_mean.copy(),
            "hits": self._hits.copy(),
        }

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self._scores = np.array(state["scores"], dtype=np.float64)
        self._count, self._scored = (int(v) for v in state["counts"])
        self._spread_mean = np.array(state["spread_mean"], dtype=np.float64)
        self._hits = np.array(state["hits"], dtype=np.float64)
        self._sorted = None


def _pad(values: np.ndarray, length: int) -> np.ndarray:
    """Cut or extend (holding the last row) ``values`` to ``length`` rows."""
    if values.shape[0] >= length:
        return values[:length]
    return np.concatenate([values, np.repeat(values[-1:], length - values.shape[0], axis=0)])
