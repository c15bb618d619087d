"""The Theta method as an online expert: exponential smoothing plus a share of the trend.

The Theta method forecasts the mean of two "theta lines": the series' least-squares
line (theta 0) carried on, and simple exponential smoothing (SES) of the line with
doubled curvature (theta 2). Both parts are linear in the observations, so the
forecast is SES of the series plus half the line's slope per step, with a lag
correction for how far SES of the time index trails the present (the "SES with
drift" form)::

    y(n + h) = level + w * slope * (lag + h),   lag = n - SES(t)_n,   w = 1 - 1/theta

``w = 1/2`` is the standard Theta (theta 2); ``w = 1`` (theta to infinity) carries
the whole slope and is exact on a line; ``w = 0`` is plain SES. An online expert
keeps, per channel, the line's weighted sums (about the newest time, with a
forgetting factor so a long series has a local line, as a peer refitted on a
trailing window would) and one SES level per smoothing constant of a small grid
(``alphas``). Like the optimised Theta, the expert chooses its smoothing constant
(and, with several ``weights``, its theta) from the data: at every block it scores
each candidate's forecast from the previous block against the block's
observations, and forecasts with the candidate of least discounted absolute error.

A seasonal series is first adjusted, as the Theta method does: by classical
seasonal indices (ratios to a centred moving average for a positive series,
differences otherwise) of the newest observations at a period chosen near the
detected ones, made again at every block; the Theta forecast of the adjusted series
is re-seasonalised (`episodic_koopman.seasonal_indices`).

Costs: O(candidates) per observation, all in one compiled loop per block (and one
per forecast), plus one pass over the newest ``span`` observations per block for a
seasonal series; the state is a few arrays of ``(candidates, channels)`` and the
indices.

>>> import numpy as np
>>> from episodic_koopman.embedding import History
>>> h = History(length=64, n_channels=1)
>>> theta = Theta("theta", block=4, alphas=(0.5,), weights=(1.0,))
>>> for t in range(16):
...     h.append(np.array([3.0 + 2.0 * t]))
...     if (t + 1) % 4 == 0:
...         theta.advance(h, t + 1)
>>> theta.forecast(h, 16, 3)[:, 0].round(9).tolist()
[35.0, 37.0, 39.0]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .components import State
from .embedding import History
from .jit import kernel
from .seasonal_indices import additive_indices, ratio_indices
from .state_checks import state_array, state_count

#: Layout of a saved `Theta` state (its meta's ``"version"``).
STATE_VERSION = 1
#: The expert's period: of the detected periods and those within `NEARBY` of one (a broad
#: autocorrelation peak is found a few lags off: 21-23 for hourly data), the one whose
#: seasonal indices explain the newest observations best (the F statistic of
#: `additive_indices`), if at least `SEASON_F`; the period in use is kept unless another
#: explains `STAY` times more. (F on the bench series: true seasons 3.6-88, others 0.2-2.4.)
NEARBY = 0.15
SEASON_F = 3.0
STAY = 1.5
#: Rows of `Theta.sums`: the line's weighted sums, with time ``u`` counted from the newest
#: observation (0, -1, -2, ...): sum w, sum w u, sum w u^2, sum w y, sum w u y.
N_SUMS = 5


@kernel
def _absorb(
    rows: np.ndarray,
    season: np.ndarray,
    scale: np.ndarray,
    sums: np.ndarray,
    level: np.ndarray,
    lag: np.ndarray,
    loss: np.ndarray,
    alphas: np.ndarray,
    weights: np.ndarray,
    forgetting: float,
    discount: float,
    seen: int,
) -> int:
    """Learn ``rows (k, c)`` less their ``season (m, c)`` into the state arrays in place
    (row ``i`` is observation ``seen + i``, of phase ``(seen + i) % m``); return the new
    count seen.

    With ``discount >= 0`` (at a block boundary) each candidate ``(alpha, w)`` is first
    scored: ``loss = discount * loss + sum_h |rows[h-1] - forecast(h)|`` per channel.
    """
    k, c = rows.shape
    m = season.shape[0]
    n_alpha, n_weight = alphas.size, weights.size
    if discount >= 0.0 and seen >= 2:
        for ch in range(c):
            slope = _slope(sums, ch)
            for a in range(n_alpha):
                for j in range(n_weight):
                    g = a * n_weight + j
                    total = 0.0
                    for h in range(k):
                        guess = level[a, ch] + weights[j] * slope * (lag[a] + (h + 1))
                        p = (seen + h) % m
                        total += abs(rows[h, ch] - season[p, ch] - scale[p, ch] * guess)
                    loss[g, ch] = discount * loss[g, ch] + total
    for i in range(k):
        phase = seen % m
        if seen == 0:
            for ch in range(c):
                y = (rows[i, ch] - season[phase, ch]) / scale[phase, ch]
                sums[0, ch], sums[1, ch], sums[2, ch] = 1.0, 0.0, 0.0
                sums[3, ch], sums[4, ch] = y, 0.0
                for a in range(n_alpha):
                    level[a, ch] = y
            for a in range(n_alpha):
                lag[a] = 0.0
        else:
            for ch in range(c):
                y = (rows[i, ch] - season[phase, ch]) / scale[phase, ch]
                s0, s1, s2, sy, suy = (
                    sums[0, ch],
                    sums[1, ch],
                    sums[2, ch],
                    sums[3, ch],
                    sums[4, ch],
                )
                # Every earlier time moves one step further back (u -> u - 1); y enters at u = 0.
                sums[0, ch] = forgetting * s0 + 1.0
                sums[1, ch] = forgetting * (s1 - s0)
                sums[2, ch] = forgetting * (s2 - 2.0 * s1 + s0)
                sums[3, ch] = forgetting * sy + y
                sums[4, ch] = forgetting * (suy - sy)
                for a in range(n_alpha):
                    level[a, ch] = (1.0 - alphas[a]) * level[a, ch] + alphas[a] * y
            for a in range(n_alpha):
                lag[a] = (1.0 - alphas[a]) * (lag[a] + 1.0)
        seen += 1
    return seen


@kernel
def _slope(sums: np.ndarray, ch: int) -> float:
    """The weighted least-squares slope of channel ``ch`` (0 while it is undefined)."""
    s0, s1, s2, sy, suy = sums[0, ch], sums[1, ch], sums[2, ch], sums[3, ch], sums[4, ch]
    spread = s0 * s2 - s1 * s1
    if not spread > 1e-12 * s0 * s0:  # one time only (or nan): no line yet
        return 0.0
    return (s0 * suy - s1 * sy) / spread


@kernel
def _paths(
    sums: np.ndarray,
    level: np.ndarray,
    lag: np.ndarray,
    loss: np.ndarray,
    weights: np.ndarray,
    season: np.ndarray,
    scale: np.ndarray,
    seen: int,
    out: np.ndarray,
) -> None:
    """Each channel's forecast ``out (steps, c)`` by its candidate of least loss, after
    ``seen`` observations, with its ``season (m, c)`` added back."""
    steps, c = out.shape
    m = season.shape[0]
    n_weight = weights.size
    for ch in range(c):
        best = 0
        for g in range(1, loss.shape[0]):
            if loss[g, ch] < loss[best, ch]:  # the first of equals: the grid's order
                best = g
        a, j = best // n_weight, best % n_weight
        slope = _slope(sums, ch)
        for h in range(steps):
            trend = level[a, ch] + weights[j] * slope * (lag[a] + (h + 1))
            p = (seen + h) % m
            out[h, ch] = season[p, ch] + scale[p, ch] * trend


class Theta:
    """The Theta method with its smoothing constant (and theta) chosen online.

    ``alphas`` and ``weights`` (``w = 1 - 1/theta`` of each theta line) make the
    grid of candidates, ordered alpha-major; before any block is scored the first
    candidate forecasts. ``forgetting`` weighs the line's points by age (1: the
    whole series), ``discount`` the candidates' past block errors.

    With ``periods_of`` (a `PeriodFinder`'s periods), the series is seasonally
    adjusted first, as the Theta method does for a seasonal series: classical indices
    of the newest ``span`` observations at a period chosen near the detected ones (see
    `SEASON_F`), made again at every block, are taken off each observation learnt and
    put back on the forecast. They are ratios with ``multiplicative`` while those
    observations are all positive, differences otherwise. When the period or the kind
    of indices changes, the state is rebuilt from those observations (rare). Without a
    period the expert is the plain one.
    """

    def __init__(
        self,
        name: str,
        block: int,
        alphas: tuple[float, ...],
        weights: tuple[float, ...] = (0.5,),
        forgetting: float = 1.0,
        discount: float = 1.0,
        periods_of: Any = None,
        span: int = 600,
        multiplicative: bool = False,
    ) -> None:
        if not alphas or not all(0.0 < a <= 1.0 for a in alphas):
            raise ValueError(f"alphas must lie in (0, 1], got {alphas!r}")
        if not weights or not 0.0 < forgetting <= 1.0 or not 0.0 <= discount <= 1.0:
            raise ValueError("weights must be given; forgetting in (0, 1]; discount in [0, 1]")
        self.name, self.block, self.span = name, block, span
        self.alphas = np.array(alphas, dtype=np.float64)
        self.weights = np.array(weights, dtype=np.float64)
        self.forgetting, self.discount = float(forgetting), float(discount)
        self.periods_of = periods_of
        self.found: tuple[int, ...] = ()  # the periods `periods_of` gave last
        self.chosen: int | None = None  # the period to adjust by (see `_choose`)
        self.period: int | None = None  # of `season` (None: no adjustment)
        self.seen = 0  # observations absorbed
        self.sums: np.ndarray | None = None  # (N_SUMS, c)
        self.level: np.ndarray | None = None  # (alphas, c)
        self.lag = np.zeros(self.alphas.size)  # SES of time's lag behind the newest time
        self.loss: np.ndarray | None = None  # (alphas * weights, c)
        self.season: np.ndarray | None = None  # (period or 1, c): indices by phase
        self.scale: np.ndarray | None = None  # (period or 1, c): ratios by phase
        self.multiplicative = multiplicative  # ratios for a positive series
        self.ratio = False  # the adjustment in use is by ratios

    def _choose(self, rows: np.ndarray, found: tuple[int, ...], first: int) -> int | None:
        """The period to adjust by (see `SEASON_F`), from ``rows``, the newest observations
        (of which row 0 is observation ``first``), and the detected periods ``found``."""
        rows = np.ascontiguousarray(rows)

        def fit(q: int) -> float:  # 0 for a period the rows hold fewer than 3 times
            if q < 2 or 3 * q > rows.shape[0]:
                return 0.0
            return float(additive_indices(rows, q, first, np.empty((q, rows.shape[1]))))

        kept = self.chosen
        best, best_fit = kept, (fit(kept) if kept is not None else 0.0)
        bar = max(SEASON_F, STAY * best_fit) if best_fit >= SEASON_F else SEASON_F
        if best_fit < SEASON_F:
            best, best_fit = None, 0.0
        for period in found:
            low, high = max(2, int(period * (1 - NEARBY))), int(period * (1 + NEARBY)) + 1
            for q in (period, *range(low, high + 1)):
                f = fit(q)
                if f >= bar and f > best_fit:
                    best, best_fit = q, f
        return best

    def _reset(self, c: int, period: int | None) -> None:
        self.period, self.seen = period, 0
        self.sums = np.zeros((N_SUMS, c))
        self.level = np.zeros((self.alphas.size, c))
        self.lag = np.zeros(self.alphas.size)
        self.loss = np.zeros((self.alphas.size * self.weights.size, c))
        self.season = np.zeros((period or 1, c))
        self.scale = np.ones((period or 1, c))

    def advance(self, history: History, n: int) -> None:
        c = history.last(1).shape[1]
        usable = min(n, history.length, self.span)
        if self.periods_of is not None:
            found = tuple(self.periods_of())
            # Looked at again when the detected periods change, and at every block while
            # the window of newest observations still grows (few rows favour short periods).
            if found != self.found or (found and usable < self.span):
                self.found = found
                self.chosen = self._choose(history.last(usable), found, n - usable)
        period = self.chosen
        if period is not None and usable < 2 * period:  # too few seasons to adjust by
            period = None
        window = np.ascontiguousarray(history.last(usable))
        ratio = period is not None and self.multiplicative and bool(window.min() > 0.0)
        if self.sums is None or period != self.period or ratio != self.ratio:
            self._reset(c, period)  # and learn again from the newest `usable` observations
            self.ratio = ratio
            first, discount = n - usable, -1.0
        else:
            first, discount = self.seen, self.discount
        assert self.season is not None
        if period is not None and ratio:
            ratio_indices(window, period, n - usable, self.scale)
        elif period is not None:
            additive_indices(window, period, n - usable, self.season)
        self.seen = _absorb(
            np.ascontiguousarray(history.last(n - first)),
            self.season,
            self.scale,
            self.sums,
            self.level,
            self.lag,
            self.loss,
            self.alphas,
            self.weights,
            self.forgetting,
            discount,
            first,
        )

    def forecast(self, history: History, n: int, steps: int) -> np.ndarray | None:
        if self.sums is None or self.level is None or self.loss is None or self.season is None:
            return None
        sums, level, lag = self.sums, self.level, self.lag
        if n > self.seen:  # between boundaries: roll copies over the newest observations
            sums, level, lag = sums.copy(), level.copy(), lag.copy()
            rows = np.ascontiguousarray(history.last(n - self.seen))
            _absorb(rows, self.season, self.scale, sums, level, lag, self.loss, self.alphas,
                    self.weights, self.forgetting, -1.0, self.seen)  # fmt: skip
        out = np.empty((steps, sums.shape[1]))
        _paths(sums, level, lag, self.loss, self.weights, self.season, self.scale, n, out)
        return out

    def get_state(self) -> State:
        meta = {"version": STATE_VERSION, "seen": self.seen, "period": self.period}
        meta |= {"found": list(self.found), "chosen": self.chosen, "ratio": self.ratio}
        if self.sums is None:
            return meta, {}
        assert self.level is not None and self.loss is not None and self.season is not None
        assert self.scale is not None
        arrays = {
            "scale": self.scale,
            "sums": self.sums,
            "level": self.level,
            "lag": self.lag,
            "loss": self.loss,
            "season": self.season,
        }
        return meta, {k: v.copy() for k, v in arrays.items()}

    def set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        version = meta.get("version")
        if version != STATE_VERSION:
            raise ValueError(f"a Theta expert's state of version {version!r} is not readable")
        owner = f"Theta {self.name!r}"
        seen = state_count(owner, "seen", meta["seen"])
        period, chosen = (
            None if meta[k] is None else state_count(owner, k, meta[k], 1)
            for k in ("period", "chosen")
        )
        found = tuple(int(p) for p in meta["found"])
        ratio = bool(meta["ratio"])
        restored: tuple[np.ndarray, ...] | None = None
        if "sums" in arrays:
            # The kernels index these by the candidate grid and the period: check all
            # of them (channels from ``sums``) before anything is assigned.
            c = state_array(owner, arrays, "sums", (N_SUMS, None)).shape[1]
            if c < 1:
                raise ValueError(f"{owner}: 'sums' must have at least one channel")
            a, m = self.alphas.size, period or 1
            shapes = {
                "sums": (N_SUMS, c),
                "level": (a, c),
                "lag": (a,),
                "loss": (a * self.weights.size, c),
                "season": (m, c),
                "scale": (m, c),
            }
            restored = tuple(state_array(owner, arrays, k, s) for k, s in shapes.items())
        self.seen, self.period, self.chosen, self.found, self.ratio = (
            seen, period, chosen, found, ratio
        )  # fmt: skip
        if restored is None:
            self.sums = self.level = self.loss = self.season = self.scale = None
            self.lag = np.zeros(self.alphas.size)
            return
        self.sums, self.level, self.lag, self.loss, self.season, self.scale = restored
