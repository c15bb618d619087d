"""Prediction intervals by online split-conformal calibration, per step ahead.

Every episode issues a forecast for ``1..H`` steps. Once its horizon has
passed, its absolute errors become nonconformity scores, one per step ahead and
channel. The scores are *normalised* (Papadopoulos et al. 2008) by two factors
known at the forecast's origin:

* the series' *local scale* ``d``: the median absolute change over the last
  `LOCAL_SCALE_SPAN` observations (`episodic_koopman.local_scale`). So the intervals follow a
  scale that grows or shrinks (exponential growth), while a median ignores a
  short burst of volatility (a flood);
* ``u = 1 + s / s_bar``, where ``s`` is the spread (weighted standard deviation)
  of the recalled episodes' corrections at that origin (0 without recall), and
  ``s_bar`` is its running mean. So intervals widen when the recalled pasts
  disagree and narrow when they agree; at most ``1 + _MAX_SPREAD_RATIO``-fold, as
  a running mean of near-zero spreads (a recall on one episode) would otherwise
  make the next ordinary spread widen them without bound.

The half-width at step ``h`` is the conformal quantile of the last ``window``
scores at ``h``, times the present ``d * u``. The quantile interpolates between
order statistics at rank ``(n + 1) level``, so that its expected coverage is the
level itself rather than the next multiple of ``1 / (n + 1)`` above it.

The level is then *recalibrated* from the intervals' own record: each score's
p-value (the least level whose interval, as calibrated just before, held it) is
kept, and a requested level ``a`` is served at the ``a``-quantile of the past
p-values, per step ahead and channel (Kuleshov et al. 2018), shrunk towards
``a`` while the p-values are few. Uniform p-values leave ``a`` as it is; scores
whose distribution has drifted or changed shape (heavy tails) move it. This is
what adaptive conformal inference (Gibbs and Candes 2021) does for one level, at
every level at once.

With fewer than ``min_samples`` scores the scores are too few for a quantile. If
forecasts graded for the intervals alone (``graded_only``: the classical experts'
forecast at every step before the operator's first fit, see
``ModelConfig.early_grading``) number ``min_samples``, their conformal quantile is
taken (at the level asked: there are no p-values yet); such scores are kept apart
(the newest `_EARLY_WINDOW`), and dropped once the scored forecasts are enough.
Otherwise the interval is Gaussian, with the scores' root mean square shrunk
towards that of a Gaussian random walk whose changes have the local scale as
median absolute value (``sqrt(h) / 0.6745`` in units of ``d``).
Beyond the calibrated horizon ``H`` the half-width grows as ``sqrt(h / H)``.

>>> import numpy as np
>>> cal = ConformalCalibrator(horizon=2, n_channels=1, window=50, min_samples=6)
>>> for e in [0.1, -0.2, 0.3, -0.1, 0.2, 0.15]:
...     cal.update(np.full((2, 1), e), spread=np.zeros((2, 1)), scale=np.ones(1))
>>> hw = cal.half_width(0.8, spread=np.zeros((2, 1)), steps=2, scale=np.ones(1))
>>> [round(x, 6) for x in hw.ravel().tolist()]
[0.26, 0.26]
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

from .jit import kernel
from .sorted_ring import SortedRing, lower_bound
from .state_checks import state_array, state_count

_SPREAD_SMOOTHING = 0.05
#: The most a recall's spread widens an interval, relative to the running mean spread
#: (a factor of ``1 + _MAX_SPREAD_RATIO``).
_MAX_SPREAD_RATIO = 100.0
#: Pseudo-scores of the random-walk prior in the Gaussian interval of few scores.
_PRIOR_WEIGHT = 1.0
#: The median of ``|Z|`` for a standard normal ``Z``.
_MEDIAN_ABS_NORMAL = 0.6744897501960817
#: Pseudo-episodes of the identity in the recalibration of levels.
_RECALIBRATION_PRIOR = 30.0
#: Graded-only scores kept (the newest): a model learning from scratch forecasts worse
#: the younger it is, so older grades overstate its errors (a synthetic seasonal series
#: of 160 steps: 50% intervals held 0.58 with 30 kept, 0.73 with 60, 0.84 with 200).
_EARLY_WINDOW = 30


class ConformalCalibrator:
    """Rolling per-horizon conformal calibration with empirical coverage tracking.

    Its arithmetic runs in compiled loops over the cells (step ahead, channel), and
    the scores and p-values are kept sorted per cell as they arrive (`SortedRing`):
    a scored tick updates it and asks for one interval.
    """

    def __init__(self, horizon: int, n_channels: int, window: int = 200, min_samples: int = 20):
        self.horizon = horizon
        self.n_channels = n_channels
        self.window = window
        self.min_samples = min_samples
        cells = horizon * n_channels  # flat cell ``h * n_channels + j``
        self._scores = SortedRing(window, cells)
        # Each score's p-value under the calibration in force before it (see `_p_values_of`),
        # taken only once the scores are enough for a quantile.
        self._p_values = SortedRing(window, cells)
        self._spread_mean = np.zeros((horizon, n_channels))  # updated in place
        self._hits = np.zeros((horizon, n_channels))
        self._scored = 0
        # The normalised half-widths by level, until the next update: every forecast
        # between two updates asks for the same ones.
        self._quantiles: dict[float, np.ndarray] = {}
        # Scores of forecasts graded for the intervals alone (see the module's docstring): a
        # ring of the newest ones once the first arrives, emptied once the scored ones are
        # enough.
        self._early = np.zeros((0, horizon, n_channels))
        self._n_early = 0
        self._early_window = max(_EARLY_WINDOW, min_samples)

    @property
    def n_samples(self) -> int:
        return self._scores.held

    @property
    def n_early_samples(self) -> int:
        """Scores held of forecasts graded for the intervals alone."""
        return min(self._n_early, self._early_window)

    def update(
        self,
        errors: np.ndarray,
        spread: np.ndarray,
        scale: np.ndarray,
        lower: np.ndarray | None = None,
        upper: np.ndarray | None = None,
        realised: np.ndarray | None = None,
        graded_only: bool = False,
    ) -> None:
        """Score one episode's errors ``(H, c)`` at its origin's local ``scale`` ``(c,)``.

        The hits of its interval are counted if ``lower``, ``upper`` and ``realised``
        are given. A ``graded_only`` forecast's score is kept apart (see the module's
        docstring), and only while the scored forecasts are too few.
        """
        scores = np.empty((self.horizon, self.n_channels))
        if errors.shape != scores.shape or spread.shape != scores.shape:  # as NumPy broadcasts
            errors, spread = (np.broadcast_to(a, scores.shape) for a in (errors, spread))
        _normalised_scores(errors, spread, scale, self._spread_mean, _MAX_SPREAD_RATIO, scores)
        if graded_only:
            if self.n_samples < self.min_samples:  # else never read again
                if self._early.shape[0] == 0:
                    shape = (self._early_window, self.horizon, self.n_channels)
                    self._early = np.zeros(shape)
                self._early[self._n_early % self._early_window] = scores
                self._n_early += 1
                self._quantiles.clear()
            return
        flat = scores.reshape(-1)
        if self.n_samples >= self.min_samples:
            p_values = np.empty_like(flat)
            _p_values_of(self._scores.sorted(), self.n_samples, flat, p_values)
            self._p_values.push(p_values)
        self._scores.push(flat)
        if self.n_samples >= self.min_samples and self._n_early:
            self._early = np.zeros((0, self.horizon, self.n_channels))  # never read again
            self._n_early = 0
        self._quantiles.clear()
        _follow_spread(self._spread_mean, spread, 1 - _SPREAD_SMOOTHING, _SPREAD_SMOOTHING)
        if lower is not None and upper is not None and realised is not None:
            _count_hits(self._hits, realised, lower, upper)
            self._scored += 1

    def half_width(
        self, level: float, spread: np.ndarray, steps: int, scale: np.ndarray
    ) -> np.ndarray:
        """Half-widths ``(steps, c)`` of intervals at ``level`` for the present spread and scale."""
        quantile = self._quantiles.get(level)
        if quantile is None:
            if len(self._quantiles) > 16:  # only from many distinct levels; cheap to remake
                self._quantiles.clear()
            quantile = self._quantiles[level] = self._quantile(level)
        widths = np.empty((steps, self.n_channels))
        # The spread's rows cut or extended (holding the last) to the calibrated horizon.
        _scaled_widths(quantile, spread, scale, self._spread_mean, _MAX_SPREAD_RATIO, widths)
        if steps > self.horizon:
            growth = np.sqrt(np.arange(self.horizon + 1, steps + 1) / self.horizon)
            widths[self.horizon :] = widths[self.horizon - 1] * growth[:, None]
        return widths

    def _quantile(self, level: float) -> np.ndarray:
        """The normalised half-widths ``(H, c)`` at the recalibrated ``level``."""
        levels = np.empty((self.horizon, self.n_channels))
        m = self._p_values.held
        _recalibrated(self._p_values.sorted(), m, level, _RECALIBRATION_PRIOR, levels)
        out = np.empty_like(levels)
        if self.n_samples >= self.min_samples:
            _order_statistics(self._scores.sorted(), self.n_samples, levels, out)
            return out
        m = self.n_early_samples
        if m >= self.min_samples:
            ordered = np.sort(self._early[:m].reshape(m, -1).T, axis=1)
            _order_statistics(ordered, m, levels, out)
            return out
        z = np.vectorize(lambda lv: NormalDist().inv_cdf(0.5 + lv / 2))(levels)
        return z * self._rms()

    def _rms(self) -> np.ndarray:
        """``(H, c)``: the scores' root mean square, shrunk towards a random walk's."""
        n = self.n_samples
        # A Gaussian random walk's h-step mean square error, in units of its median
        # absolute change (the standard deviation of a change is 1 / 0.6745 of it).
        prior = np.arange(1, self.horizon + 1, dtype=np.float64) / _MEDIAN_ABS_NORMAL**2
        held = self._scores.values[:n].reshape(n, self.horizon, self.n_channels)
        mean_square = np.square(held).sum(axis=0)
        return np.sqrt((_PRIOR_WEIGHT * prior[:, None] + mean_square) / (_PRIOR_WEIGHT + n))

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
        shape = (self.window, self.horizon, self.n_channels)
        counts = [self._scores.count, self._scored, self._p_values.count]
        return {
            "scores": self._scores.values.reshape(shape).copy(),
            "counts": np.array(counts, dtype=np.int64),
            "spread_mean": self._spread_mean.copy(),
            "hits": self._hits.copy(),
            "p_values": self._p_values.values.reshape(shape).copy(),
            "early_scores": self._early.copy(),
            "early_count": np.array([self._n_early], dtype=np.int64),
        }

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        # Every field is checked against (window, horizon, channels) before any is
        # assigned: the compiled loops index them without bounds checks.
        owner, cells = "ConformalCalibrator", (self.horizon, self.n_channels)
        counts = state_array(owner, state, "counts", (3,), np.int64)
        count, scored, n_p_values = (
            state_count(owner, f"counts[{i}]", counts[i]) for i in range(3)
        )  # fmt: skip
        scores = state_array(owner, state, "scores", (self.window, *cells))
        p_values = state_array(owner, state, "p_values", (self.window, *cells))
        spread_mean = state_array(owner, state, "spread_mean", cells)
        hits = state_array(owner, state, "hits", cells)
        early, n_early = np.zeros((0, *cells)), 0  # absent: saved before early grading
        if "early_scores" in state:
            early = state_array(owner, state, "early_scores", (None, *cells))
            if early.shape[0] not in (0, self._early_window):
                raise ValueError(
                    f"{owner}: 'early_scores' must hold 0 or {self._early_window} rows,"
                    f" got {early.shape[0]}"
                )
            n_early = state_count(
                owner, "early_count", state_array(owner, state, "early_count", (1,), np.int64)[0]
            )
            if early.shape[0] == 0 and n_early:
                raise ValueError(f"{owner}: 'early_count' is {n_early} with no early scores")
        self._scores.restore(scores.reshape(self.window, -1), count)
        self._p_values.restore(p_values.reshape(self.window, -1), n_p_values)
        self._scored, self._spread_mean, self._hits = scored, spread_mean, hits
        self._early, self._n_early = early, n_early
        self._quantiles.clear()


# The loops below run over the cells ``(h, j)`` of ``(H, c)`` arrays, flat cell
# ``k = h * c + j`` in the sorted rings. Each gives the floats of the NumPy
# expression in its docstring (no fastmath: the same operations in the same order).


@kernel
def _normalizer(mean, spread, max_ratio):  # type: ignore[no-untyped-def]
    """``1 + min(s / s_bar, max_ratio)`` of a cell's ``spread`` and running ``mean``, the
    ratio 0 in a cell not seen a spread (``s_bar > 0`` false); NaN passes as
    ``np.minimum`` passes it."""
    ratio = spread / mean if mean > 0 else 0.0
    if ratio > max_ratio:
        ratio = max_ratio
    return 1.0 + ratio


@kernel
def _normalised_scores(errors, spread, scale, spread_mean, max_ratio, out):  # type: ignore[no-untyped-def]
    """``out = |errors| / (normalizer(spread) * scale)``."""
    for h in range(out.shape[0]):
        for j in range(out.shape[1]):
            norm = _normalizer(spread_mean[h, j], spread[h, j], max_ratio) * scale[j]
            out[h, j] = abs(errors[h, j]) / norm


@kernel
def _scaled_widths(quantile, spread, scale, spread_mean, max_ratio, out):  # type: ignore[no-untyped-def]
    """``out[:t] = quantile[:t] * (normalizer(padded spread) * scale)``, ``t = min(len(out),
    H)``, the spread's rows cut or extended (holding the last) to ``H``."""
    last = spread.shape[0] - 1
    for h in range(min(out.shape[0], quantile.shape[0])):
        for j in range(out.shape[1]):
            s = spread[min(h, last), j]
            norm = _normalizer(spread_mean[h, j], s, max_ratio) * scale[j]
            out[h, j] = quantile[h, j] * norm


@kernel
def _follow_spread(spread_mean, spread, keep, take):  # type: ignore[no-untyped-def]
    """If any spread is positive, ``spread_mean = keep * s_bar + take * spread`` (in place)
    at the cells seen a spread (``s_bar > 0``), the spread itself at the others."""
    seen_any = False
    for h in range(spread.shape[0]):
        for j in range(spread.shape[1]):
            if spread[h, j] > 0:
                seen_any = True
    if not seen_any:
        return
    for h in range(spread.shape[0]):
        for j in range(spread.shape[1]):
            mean = spread_mean[h, j]
            spread_mean[h, j] = keep * mean + take * spread[h, j] if mean > 0 else spread[h, j]


@kernel
def _count_hits(hits, realised, lower, upper):  # type: ignore[no-untyped-def]
    """``hits += (realised >= lower) & (realised <= upper)``."""
    for h in range(hits.shape[0]):
        for j in range(hits.shape[1]):
            if realised[h, j] >= lower[h, j] and realised[h, j] <= upper[h, j]:
                hits[h, j] += 1.0


@kernel
def _p_values_of(ordered, n, scores, out):  # type: ignore[no-untyped-def]
    """``out[k]``: the least level whose interval, as calibrated by the ``n`` sorted scores
    ``ordered[k, :n]`` (NaN last), holds ``scores[k]``: the inverse of the conformal
    quantile. Were the calibration right, these would be uniform on ``[0, 1]``.

    Under the smallest score the rank is from 0 (score / smallest), else from the
    order statistic under it, interpolated across the gap to the next; 1 when the
    gap is not positive or the score is over every one. Rank r (1-based) is level
    ``r / (n + 1)``.
    """
    for k in range(scores.shape[0]):
        row, score = ordered[k], scores[k]
        below = lower_bound(row, n, score)  # the order statistics under it are a prefix
        if below >= n:
            out[k] = 1.0
            continue
        if below == 0:
            span, rise = row[0], score
        else:
            span, rise = row[below] - row[below - 1], score - row[below - 1]
        fraction = rise / span if span > 0 else 1.0
        rank = (fraction if below == 0 else below + fraction) / (n + 1)
        out[k] = 1.0 if rank > 1.0 else rank


@kernel
def _recalibrated(ordered, m, level, prior, out):  # type: ignore[no-untyped-def]
    """``out`` ``(H, c)``: the levels whose intervals held ``level`` of the past outcomes.

    Per cell, the empirical ``level``-quantile of the ``m`` past p-values sorted in
    ``ordered`` (Kuleshov et al. 2018), shrunk towards ``level`` itself by ``prior``
    pseudo-episodes while there are few (``level`` itself when none). This corrects
    a calibration that is systematically too wide or too narrow at a level (scores
    whose distribution drifts or changes shape, or few of them), as adaptive
    conformal inference does for one level, at every level at once.
    """
    c = out.shape[1]
    if m == 0:
        out[:] = level
        return
    position = level * (m - 1)
    below = int(np.floor(position))
    above = min(below + 1, m - 1)
    fraction = position - below
    for h in range(out.shape[0]):
        for j in range(c):
            row = ordered[h * c + j]
            low, high = row[below], row[above]
            empirical = low + fraction * (high - low)
            out[h, j] = (prior * level + m * empirical) / (prior + m)


@kernel
def _order_statistics(ordered, n, levels, out):  # type: ignore[no-untyped-def]
    """``out`` ``(H, c)``: per cell, the score at 1-based rank ``(n + 1) level`` of the
    ``n`` sorted ``ordered[k, :n]``, interpolated between order statistics; below rank 1
    the smallest, above rank ``n`` the largest (NaN for a NaN level)."""
    c = out.shape[1]
    for h in range(out.shape[0]):
        for j in range(c):
            position = (n + 1) * levels[h, j]
            if position < 1.0:
                position = 1.0
            if position > n:
                position = float(n)
            position -= 1.0  # 0-based
            if position != position:
                out[h, j] = np.nan
                continue
            below = int(np.floor(position))
            above = min(below + 1, n - 1)
            row = ordered[h * c + j]
            low, high = row[below], row[above]
            out[h, j] = low + (position - below) * (high - low)
