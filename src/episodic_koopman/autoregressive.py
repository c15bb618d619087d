"""Local autoregressions for the expert bank: on the values, and on seasonal differences.

Both are exponentially weighted recursive least squares in information form: a
rank-``block`` update of the ``(p+1)^2`` normal equations per block of the model's
scoring stride, and one ``(p+1)``-system solve. The seasonal AR runs the same on the
differences at a detected period, rebuilt from the history when that period changes.

>>> import numpy as np
>>> from episodic_koopman.embedding import History
>>> h = History(length=64, n_channels=1)
>>> ar = LocalAR(block=8, order=2, forgetting=1.0)
>>> for t in range(48):
...     h.append(np.array([0.5 + 0.25 * t]))
...     if (t + 1) % 8 == 0:
...         ar.advance(h, t + 1)
>>> ar.forecast(h, 48, 2)[:, 0].round(6).tolist()
[12.5, 12.75]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .components import State
from .embedding import History
from .jit import kernel
from .lapack import real_solve
from .state_checks import state_array, state_count


class LocalAR:
    """A per-channel AR(``order``) with intercept, by exponentially weighted least squares.

    The normal equations ``R = sum lam^(n-t) x_t x_t'``, ``r = sum lam^(n-t) x_t y_t``
    (``x_t = [1, y_{t-1}, ..., y_{t-order}]`` less an anchor, the first value seen) are
    updated by one rank-``block`` product per block, and the coefficients re-solved
    then (with a tiny ridge for conditioning). The forecast iterates the recursion
    (exact on a noiseless AR(``order``) process once it is identified).
    """

    def __init__(self, block: int, order: int, forgetting: float, name: str = "ar") -> None:
        self.name, self.block, self.order, self.forgetting = name, block, order, forgetting
        self.decay = forgetting ** np.arange(block - 1, -1, -1, dtype=np.float64)
        self.anchor: np.ndarray | None = None  # (c,)
        self.normal: np.ndarray | None = None  # (c, p+1, p+1)
        self.moment: np.ndarray | None = None  # (c, p+1)
        self.coef: np.ndarray | None = None  # (c, p+1), None until enough rows
        self.seen = 0  # rows absorbed into the normal equations
        self._lags: dict[int, np.ndarray] = {}  # k <= block -> row of each lag of k rows
        self._eye = np.eye(order + 1)
        self._rows: dict[tuple[int, int], np.ndarray] = {}  # (c, k <= block) -> buffer

    def advance(self, history: History, n: int) -> None:
        p = self.order
        if self.anchor is None:
            self.anchor = history.last(min(n, self.block))[0].copy()
            c = self.anchor.size
            self.normal = np.zeros((c, p + 1, p + 1))
            self.moment = np.zeros((c, p + 1))
        k = min(self.block, n - p)  # rows of this block that have p lags behind them
        if k <= 0:
            return
        self._absorb(history.last(k + p) - self.anchor, k)

    def _absorb(self, rows: np.ndarray, k: int) -> None:
        """Add the newest ``k`` rows of ``rows (k + p, c)`` (lags first) and re-solve."""
        p = self.order
        assert self.normal is not None and self.moment is not None
        c = rows.shape[1]
        # x_t = [1, y_{t-1}, ..., y_{t-p}] for the k newest t, per channel: (c, k, p+1)
        lag_rows = self._lags.get(k)
        if lag_rows is None:
            lag_rows = np.arange(p - 1, p - 1 + k)[:, None] - np.arange(p)[None, :]
            if k <= self.block:  # not a seasonal AR's rebuild over ``span`` rows
                self._lags[k] = lag_rows
        x = self._rows.get((c, k))
        if x is None:  # the regressors' buffer: its column of ones is written once
            x = np.empty((c, k, p + 1))
            x[:, :, 0] = 1.0
            if k <= self.block:
                self._rows[(c, k)] = x
        x[:, :, 1:] = rows[lag_rows].transpose(2, 0, 1)
        y = rows[p:].T[:, :, None]  # (c, k, 1)
        if k <= self.block:
            w = self.decay[self.block - k :]
        else:  # a rebuild from the history (`SeasonalAR`): the same weights, further back
            w = self.forgetting ** np.arange(k - 1, -1, -1, dtype=np.float64)
        shrink = self.forgetting**k
        xw_t = (x * w[None, :, None]).transpose(0, 2, 1)  # (c, p+1, k)
        self.normal = shrink * self.normal + xw_t @ x
        self.moment = shrink * self.moment + (xw_t @ y)[:, :, 0]
        self.seen += k
        if self.seen >= 2 * (p + 1):
            trace = self.normal.trace(axis1=1, axis2=2)
            if c == 1:  # the same IEEE operations on a Python float, without three array calls
                system = self.normal + (1e-9 * (float(trace[0]) + 1.0) / (p + 1)) * self._eye
            else:
                ridge = 1e-9 * (trace + 1.0) / (p + 1)
                system = self.normal + ridge[:, None, None] * self._eye
            self.coef = real_solve(system, self.moment[:, :, None])[:, :, 0]

    def forecast(self, history: History, n: int, steps: int) -> np.ndarray | None:
        if self.coef is None or self.anchor is None:
            return None
        return anchored_forecast(self.coef, history.last(self.order), self.anchor, steps)

    def get_state(self) -> State:
        meta = {"anchored": self.anchor is not None, "fitted": self.coef is not None}
        meta["seen"] = self.seen
        arrays: dict[str, np.ndarray] = {}
        if self.anchor is not None:
            assert self.normal is not None and self.moment is not None
            arrays |= {"anchor": self.anchor, "normal": self.normal, "moment": self.moment}
        if self.coef is not None:
            arrays["coef"] = self.coef
        return meta, {k: v.copy() for k, v in arrays.items()}

    def set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self._set_state(meta, arrays, {})

    def _set_state(
        self, meta: dict[str, Any], arrays: dict[str, np.ndarray], more: dict[str, Any]
    ) -> None:
        """Check the whole state against the order (the compiled recursion indexes
        ``coef`` by it), then assign it and ``more`` (a subclass's checked fields)."""
        owner, q = f"{type(self).__name__} {self.name!r}", self.order + 1
        seen = state_count(owner, "seen", meta["seen"])
        anchor = normal = moment = coef = None
        if meta["anchored"]:
            anchor = state_array(owner, arrays, "anchor", (None,))
            c = anchor.shape[0]
            if c < 1:
                raise ValueError(f"{owner}: 'anchor' must have at least one channel")
            normal = state_array(owner, arrays, "normal", (c, q, q))
            moment = state_array(owner, arrays, "moment", (c, q))
        if meta["fitted"]:
            coef = state_array(owner, arrays, "coef", (None if anchor is None else anchor.size, q))
        self.seen, self.anchor, self.normal, self.moment, self.coef = (
            seen, anchor, normal, moment, coef
        )  # fmt: skip
        for name, value in more.items():
            setattr(self, name, value)


class SeasonalAR(LocalAR):
    """A local AR on the seasonal differences ``y_t - y_{t-P}`` at a detected period ``P``.

    Differencing at the period removes a fixed season and turns a linear trend into
    a constant (the AR's intercept); a short AR models what is left, the season's
    year-on-year drift. It is a SARIMA(p,0,0)(0,1,0)_P with drift, fitted online by
    `LocalAR`'s weighted least squares on the differences. The period is read from
    ``period_of()`` at each boundary: when it first appears or changes, the normal
    equations are rebuilt from the newest ``span`` rows, so the expert is ready
    as soon as a period is. With no period it abstains. The forecast iterates the
    AR on the differences and adds them back one period at a time (exact on a
    season plus a linear trend, and on a season whose changes from one period to
    the next follow an AR(``order``)).
    """

    def __init__(
        self,
        name: str,
        period_of: Any,
        block: int,
        order: int,
        forgetting: float,
        span: int = 600,
    ) -> None:
        super().__init__(block, order, forgetting, name)
        self.period_of = period_of
        # Rows a rebuild reads: fixed, so the expert does not depend on how much history the
        # model keeps for its memory (at forgetting 0.995, row 600 back weighs 0.05).
        self.span = span
        self.period: int | None = None  # the period of the normal equations

    def advance(self, history: History, n: int) -> None:
        period, p = self.period_of(), self.order
        if period != self.period:  # start again at the new period, from the recent history
            self.anchor = self.normal = self.moment = self.coef = None
            self.period, self.seen = period, 0
            k = min(n, history.length, self.span) - (period or 0) - p
        else:
            k = min(self.block, n - (period or 0) - p)
        if period is None or k <= 0:
            return
        if self.anchor is None:  # differences need no anchor: zero keeps `LocalAR`'s state
            c = history.last(1).shape[1]
            self.anchor = np.zeros(c)
            self.normal = np.zeros((c, p + 1, p + 1))
            self.moment = np.zeros((c, p + 1))
        rows = history.last(k + p + period)
        self._absorb(rows[period:] - rows[:-period], k)

    def forecast(self, history: History, n: int, steps: int) -> np.ndarray | None:
        period, p = self.period, self.order
        if self.coef is None or period is None or n < period + p:
            return None
        return seasonal_forecast(self.coef, history.last(period + p), period, steps)

    def get_state(self) -> State:
        meta, arrays = super().get_state()
        return meta | {"period": self.period}, arrays

    def set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        period = meta["period"]
        if period is not None:
            period = state_count(f"SeasonalAR {self.name!r}", "period", period, 1)
        self._set_state(meta, arrays, {"period": period})


@kernel
def anchored_forecast(
    coef: np.ndarray, rows: np.ndarray, anchor: np.ndarray, steps: int
) -> np.ndarray:
    """`LocalAR`'s ``(steps, c)`` forecast: the recursion on the newest ``p`` rows
    ``(p, c)`` less the ``anchor (c,)``, with the anchor added back."""
    lags = np.empty(rows.shape)
    for t in range(rows.shape[0]):
        for j in range(rows.shape[1]):
            lags[t, j] = rows[t, j] - anchor[j]
    out = iterate(coef, lags, steps)
    for h in range(steps):
        for j in range(rows.shape[1]):
            out[h, j] = out[h, j] + anchor[j]
    return out


@kernel
def seasonal_forecast(coef: np.ndarray, rows: np.ndarray, period: int, steps: int) -> np.ndarray:
    """`SeasonalAR`'s ``(steps, c)`` forecast from the newest ``period + p`` rows: the
    recursion on their ``p`` newest seasonal differences, each forecast change added
    to the value one period before (observed, then forecast)."""
    p, c = rows.shape[0] - period, rows.shape[1]
    changes = np.empty((p, c))
    for t in range(p):
        for j in range(c):
            changes[t, j] = rows[period + t, j] - rows[t, j]
    out = iterate(coef, changes, steps)
    for h in range(steps):
        for j in range(c):
            before = rows[p + h, j] if h < period else out[h - period, j]
            out[h, j] = before + out[h, j]
    return out


@kernel
def iterate(coef: np.ndarray, rows: np.ndarray, steps: int) -> np.ndarray:
    """``(steps, c)``: each channel's AR recursion ``y = a_0 + a_1 y_{-1} + ... + a_p y_{-p}``
    (``coef (c, p+1)``) iterated from its newest ``p`` values ``rows (p, c)``, each
    forecast fed back as the newest lag."""
    c, p = coef.shape[0], coef.shape[1] - 1
    out = np.empty((steps, c))
    values = np.empty(p + steps)  # the lags, oldest first, then the forecasts
    for j in range(c):
        for t in range(p):
            values[t] = rows[t, j]
        for h in range(steps):
            y = coef[j, 0]
            for i in range(1, p + 1):
                y = y + coef[j, i] * values[p + h - i]
            values[p + h] = y
            out[h, j] = y
    return out
