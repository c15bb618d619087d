"""Prediction intervals by online split-conformal calibration, per step ahead.

Every episode issues a forecast for ``1..H`` steps. Once its horizon has
passed, its absolute errors become nonconformity scores, one per step ahead and
channel. The scores are *normalised* (Papadopoulos et al. 2008) by two factors
known at the forecast's origin:

* the series' *local scale* ``d``: the median absolute change over the last
  `LOCAL_SCALE_SPAN` observations (`local_scale`). So the intervals follow a
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

import itertools
import math
from statistics import NormalDist

import numpy as np

from .embedding import History
from .sorted_window import SortedWindow

_SPREAD_SMOOTHING = 0.05
#: The most a recall's spread widens an interval, relative to the running mean spread
#: (a factor of ``1 + _MAX_SPREAD_RATIO``).
_MAX_SPREAD_RATIO = 100.0
#: Observations over which the local scale (median absolute change) is taken: long
#: enough to ignore a burst of volatility, short enough to follow growth.
LOCAL_SCALE_SPAN = 576
#: The local scale's floor, as a fraction of the series' running standard deviation
#: (a constant stretch would otherwise make every later score infinite).
_SCALE_FLOOR = 0.01
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
    changes are kept sorted per channel and moved one by one instead of taking a
    new median of all of them: the same floats as `local_scale` (the middle change,
    or the two middle ones averaged as ``np.median`` does). A cache derived from the
    history alone, never saved: it is rebuilt whenever it cannot follow.
    """

    def __init__(self, span: int = LOCAL_SCALE_SPAN) -> None:
        self.span = span
        self._history: History | None = None
        self._count = 0  # the history's count when last followed
        self._newest: list[float] = []  # its newest row then
        self._changes: list[SortedWindow] = []  # per channel

    def of(self, history: History, running_scale: np.ndarray) -> np.ndarray:
        """``local_scale(history.last(k), running_scale)``, ``k = min(span + 1, held rows)``."""
        k = min(self.span + 1, history.count, history.length)
        if k < 2:
            return running_scale.copy()
        arrived = history.count - self._count
        rows = None  # the rows since the newest one followed, oldest first
        if history is self._history and 0 <= arrived < k:
            rows = history.last(arrived + 1).tolist()
        if rows is not None and rows[0] == self._newest:
            followed = self._follow(rows, k - 1)
        else:
            followed = self._restart(np.abs(np.diff(history.last(k), axis=0)))
            rows = history.last(1).tolist()
        if not followed:  # not finite: sorting says nothing, np.median does
            self._history = None
            return local_scale(history.last(k), running_scale)
        self._history, self._count, self._newest = history, history.count, rows[-1]
        middle = [changes.median() for changes in self._changes]
        return np.maximum(np.array(middle, dtype=np.float64), _SCALE_FLOOR * running_scale)

    def _restart(self, changes: np.ndarray) -> bool:
        """Keep exactly ``changes`` ``(k - 1, c)``; ``False`` if any is not finite."""
        if not np.isfinite(changes).all():
            return False
        self._changes = [SortedWindow(channel) for channel in changes.T.tolist()]
        return True

    def _follow(self, rows: list[list[float]], size: int) -> bool:
        """Add the changes between consecutive ``rows`` (the newest, and the one before them)
        and drop the oldest beyond ``size``, per channel. Plain floats: a few per tick."""
        pairs = list(itertools.pairwise(rows))
        for j, window in enumerate(self._changes):
            # As np.abs(np.diff(...)), float for float.
            changes = [abs(after[j] - before[j]) for before, after in pairs]
            if not all(map(math.isfinite, changes)):
                return False  # (the caller rebuilds what was moved so far)
            window.slide(changes, size)
        return True


class ConformalCalibrator:
    """Rolling per-horizon conformal calibration with empirical coverage tracking."""

    def __init__(self, horizon: int, n_channels: int, window: int = 200, min_samples: int = 20):
        self.horizon = horizon
        self.n_channels = n_channels
        self.window = window
        self.min_samples = min_samples
        self._scores = np.zeros((window, horizon, n_channels))
        self._count = 0
        self._n_p_values = 0  # p-values taken (only once the scores are enough for a quantile)
        self._spread_mean = np.zeros((horizon, n_channels))
        self._hits = np.zeros((horizon, n_channels))
        self._scored = 0
        # Scores sorted per cell, one row per (step, channel): ``(H * c, n)``, until the next
        # update. Rows are contiguous, which sorts faster than down the columns.
        self._sorted: np.ndarray | None = None
        self._spread_ref: tuple[np.ndarray | None, np.ndarray] | None = None  # see `_normalizer`
        # Each score's p-value under the calibration in force before it (see `_p_values`).
        self._p_values = np.zeros((window, horizon, n_channels))
        self._sorted_p: np.ndarray | None = None  # p-values sorted as `_sorted`, until an update
        self._cells = np.arange(horizon * n_channels)  # flat index of each cell
        # `_quantile(_recalibrated(level))` by level, until the next update: every forecast
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
        return min(self._count, self.window)

    @property
    def n_early_samples(self) -> int:
        """Scores held of forecasts graded for the intervals alone."""
        return min(self._n_early, self._early_window)

    def _normalizer(self, spread: np.ndarray) -> np.ndarray:
        if self._spread_ref is None:  # kept until the spread's mean moves
            seen = self._spread_mean > 0
            # ``None``: every cell seen a spread, as soon holds (so no selection is needed).
            self._spread_ref = None if seen.all() else seen, np.where(seen, self._spread_mean, 1.0)
        seen, ref = self._spread_ref
        ratio = spread / ref if seen is None else np.where(seen, spread / ref, 0.0)
        # Capped: a recall whose weights sit on one episode has a vanishing spread, and a
        # running mean of such spreads (1e-39 has been seen) would make the next ordinary
        # spread widen intervals by 1e30 and more.
        return 1.0 + np.minimum(ratio, _MAX_SPREAD_RATIO)

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
        normalizer = self._normalizer(spread) * scale[None, :]
        scores = np.abs(errors) / normalizer
        if graded_only:
            if self.n_samples < self.min_samples:  # else never read again
                if self._early.shape[0] == 0:
                    shape = (self._early_window, self.horizon, self.n_channels)
                    self._early = np.zeros(shape)
                self._early[self._n_early % self._early_window] = scores
                self._n_early += 1
                self._quantiles.clear()
            return
        if self.n_samples >= self.min_samples:
            self._p_values[self._n_p_values % self.window] = self._p_value(scores)
            self._n_p_values += 1
        self._scores[self._count % self.window] = scores
        self._count += 1
        if self.n_samples >= self.min_samples and self._n_early:
            self._early = np.zeros((0, self.horizon, self.n_channels))  # never read again
            self._n_early = 0
        self._sorted = self._sorted_p = None
        self._quantiles.clear()
        if (spread > 0).any():
            # The cells seen a spread, as `_normalizer` keeps them (``None``: all).
            held = self._spread_ref
            seen = self._spread_mean > 0 if held is None else held[0]
            smoothed = (1 - _SPREAD_SMOOTHING) * self._spread_mean + _SPREAD_SMOOTHING * spread
            self._spread_mean = smoothed if seen is None else np.where(seen, smoothed, spread)
            self._spread_ref = None
        if lower is not None and upper is not None and realised is not None:
            self._hits += (realised >= lower) & (realised <= upper)
            self._scored += 1

    def half_width(
        self, level: float, spread: np.ndarray, steps: int, scale: np.ndarray
    ) -> np.ndarray:
        """Half-widths ``(steps, c)`` of intervals at ``level`` for the present spread and scale."""
        quantile = self._quantiles.get(level)
        if quantile is None:
            if len(self._quantiles) > 16:  # only from many distinct levels; cheap to remake
                self._quantiles.clear()
            quantile = self._quantiles[level] = self._quantile(self._recalibrated(level))
        normalizer = self._normalizer(_pad(spread, self.horizon)) * scale[None, :]
        if steps == self.horizon:  # (a scored forecast's own horizon)
            return quantile * normalizer
        widths = np.empty((steps, self.n_channels))
        calibrated = min(steps, self.horizon)
        widths[:calibrated] = quantile[:calibrated] * normalizer[:calibrated]
        if steps > self.horizon:
            growth = np.sqrt(np.arange(self.horizon + 1, steps + 1) / self.horizon)
            widths[self.horizon :] = widths[self.horizon - 1] * growth[:, None]
        return widths

    def _quantile(self, levels: np.ndarray) -> np.ndarray:
        """The normalised half-widths ``(H, c)`` at ``levels`` ``(H, c)``."""
        if self.n_samples < self.min_samples:
            m = self.n_early_samples
            if m >= self.min_samples:
                return _interpolated_order_statistic(
                    _sorted_rows(self._early[:m].reshape(m, -1)), levels
                )
            z = np.vectorize(lambda lv: NormalDist().inv_cdf(0.5 + lv / 2))(levels)
            return z * self._rms()
        return _interpolated_order_statistic(self._ordered(), levels)

    def _ordered(self) -> np.ndarray:
        """The scores sorted per cell: ``(H * c, n)``."""
        if self._sorted is None:
            n = self.n_samples
            self._sorted = _sorted_rows(self._scores[:n].reshape(n, -1))
        return self._sorted

    def _rms(self) -> np.ndarray:
        """``(H, c)``: the scores' root mean square, shrunk towards a random walk's."""
        n = self.n_samples
        # A Gaussian random walk's h-step mean square error, in units of its median
        # absolute change (the standard deviation of a change is 1 / 0.6745 of it).
        prior = np.arange(1, self.horizon + 1, dtype=np.float64) / _MEDIAN_ABS_NORMAL**2
        mean_square = np.square(self._scores[:n]).sum(axis=0)
        return np.sqrt((_PRIOR_WEIGHT * prior[:, None] + mean_square) / (_PRIOR_WEIGHT + n))

    def _p_value(self, scores: np.ndarray) -> np.ndarray:
        """``(H, c)``: the least level whose interval, as calibrated now, holds ``scores``.

        The inverse of the conformal quantile (taken only once there are
        ``min_samples`` scores). Were the calibration right, these would be
        uniform on ``[0, 1]``.
        """
        shape = scores.shape
        ordered = self._ordered()
        n = ordered.shape[1]
        scores = scores.reshape(-1)
        # Order statistics under each score: rows are sorted (NaN last), so the ones under
        # it are a prefix and the first not under it ends it (none: all n are under).
        under = ordered < scores[:, None]
        below = np.where(under[:, -1], n, under.argmin(axis=1))
        # One flat take per bound (row k of `ordered` starts at k * n); a bound outside
        # its row (under the first, over the last) is never read.
        at = self._cells * n + below
        hi = ordered.take(at, mode="clip")
        first = below == 0
        # Under the smallest score the rank is from 0 (score / smallest), else from the
        # order statistic under it, interpolated across the gap to the next; 1 when the
        # span is not positive. Rank r (1-based) is level r / (n + 1).
        lo = ordered.take(at - 1, mode="clip")
        span = np.where(first, hi, hi - lo)
        rise = np.where(first, scores, scores - lo)
        fraction = np.divide(rise, span, out=np.ones_like(span), where=span > 0)
        rank = np.minimum(np.where(first, fraction, below + fraction) / (n + 1), 1.0)
        return np.where(below >= n, 1.0, rank).reshape(shape)

    def _recalibrated(self, level: float) -> np.ndarray:
        """``(H, c)``: the levels whose intervals held ``level`` of the past outcomes.

        Per step ahead and channel, the empirical quantile of the past p-values
        (Kuleshov et al. 2018), shrunk towards ``level`` itself while there are
        few. This corrects a calibration that is systematically too wide or too
        narrow at a level (scores whose distribution drifts or changes shape, or
        few of them), as adaptive conformal inference does for one level, at
        every level at once.
        """
        m = min(self._n_p_values, self.window)
        if m == 0:
            return np.full((self.horizon, self.n_channels), level)
        if self._sorted_p is None:
            # The newest m p-values fill slots 0..m-1 of the ring (all of it once full).
            self._sorted_p = _sorted_rows(self._p_values[:m].reshape(m, -1))
        position = level * (m - 1)
        below = math.floor(position)
        above = min(below + 1, m - 1)
        low, high = self._sorted_p[:, below], self._sorted_p[:, above]
        empirical = (low + (position - below) * (high - low)).reshape(self.horizon, -1)
        # The prior's term is one float for every cell (as a full array of ``level`` gave).
        return (_RECALIBRATION_PRIOR * level + m * empirical) / (_RECALIBRATION_PRIOR + m)

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
            "counts": np.array([self._count, self._scored, self._n_p_values], dtype=np.int64),
            "spread_mean": self._spread_mean.copy(),
            "hits": self._hits.copy(),
            "p_values": self._p_values.copy(),
            "early_scores": self._early.copy(),
            "early_count": np.array([self._n_early], dtype=np.int64),
        }

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self._scores = np.array(state["scores"], dtype=np.float64)
        self._count, self._scored, self._n_p_values = (int(v) for v in state["counts"])
        self._spread_mean = np.array(state["spread_mean"], dtype=np.float64)
        self._hits = np.array(state["hits"], dtype=np.float64)
        self._p_values = np.array(state["p_values"], dtype=np.float64)
        if "early_scores" in state:
            self._early = np.array(state["early_scores"], dtype=np.float64)
            self._n_early = int(state["early_count"][0])
        else:  # saved before early grading existed: none
            self._early = np.zeros((0, self.horizon, self.n_channels))
            self._n_early = 0
        self._sorted = self._sorted_p = None
        self._quantiles.clear()
        self._spread_ref = None


def _sorted_rows(values: np.ndarray) -> np.ndarray:
    """``(n, K)`` values sorted per column, as contiguous rows ``(K, n)``."""
    rows = np.ascontiguousarray(values.T)
    rows.sort(axis=1)
    return rows


def _interpolated_order_statistic(ordered: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Per cell, the score at 1-based rank ``(n + 1) level`` of ``ordered`` ``(H * c, n)``
    (one sorted row per cell of ``levels`` ``(H, c)``).

    Interpolated between order statistics; below rank 1 the smallest score, above
    rank ``n`` the largest.
    """
    n = ordered.shape[1]
    # np.clip's own floats (it is this minimum of a maximum), for half its overhead.
    position = np.minimum(np.maximum((n + 1) * levels, 1.0), float(n)) - 1.0  # 0-based
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, n - 1)
    start = np.arange(0, ordered.size, n).reshape(levels.shape)  # each row's first index
    low, high = ordered.take(start + below), ordered.take(start + above)
    return low + (position - below) * (high - low)


def _pad(values: np.ndarray, length: int) -> np.ndarray:
    """Cut or extend (holding the last row) ``values`` to ``length`` rows."""
    if values.shape[0] >= length:
        return values[:length]
    return np.concatenate([values, np.repeat(values[-1:], length - values.shape[0], axis=0)])
