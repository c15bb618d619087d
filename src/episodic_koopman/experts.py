"""Cheap classical experts: the last value, seasonal naives, damped trend, local ARs.

Each expert is a small component that forecasts every channel on its own from the
raw history. Their state moves in *blocks*: at every observation count that is a
multiple of ``block`` (the model's scoring stride), the block of ``block``
observations since the previous boundary is absorbed in one step. Boundaries are
fixed by the count alone, so the state is a function of the observations, whatever
the chunking or the times forecasts are asked for; a forecast between boundaries
rolls the state forward over the newest observations without keeping the result.

Costs (per observation, amortised over a block): the last value and the seasonal
naive keep no state; damped trend is one small matrix product per block; the
local AR is a rank-``block`` update of its ``(p+1)^2`` normal equations per block
(exponentially weighted recursive least squares in information form) and one
``(p+1)``-system solve; the seasonal AR is the same on the differences at a
detected period (rebuilt from the history when that period changes, which is rare).

>>> import numpy as np
>>> from episodic_koopman.embedding import History
>>> h = History(length=64, n_channels=1)
>>> trend = DampedTrend(block=4, alpha=0.5, beta=0.5, phi=1.0)
>>> for t in range(16):
...     h.append(np.array([2.0 * t]))
...     if (t + 1) % 4 == 0:
...         trend.advance(h, t + 1)
>>> trend.forecast(h, 16, 3)[:, 0].round(6).tolist()
[32.0, 34.0, 36.0]
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from numpy.linalg import _umath_linalg

from .components import State
from .embedding import History
from .koopman_expert import KoopmanExpert
from .periods import PeriodFinder


class Expert(Protocol):
    """A classical expert: block updates at boundaries, forecasts from the history."""

    name: str

    def advance(self, history: History, n: int) -> None:
        """Absorb the block ending at observation count ``n`` (a boundary)."""

    def forecast(self, history: History, n: int, steps: int) -> np.ndarray | None:
        """``(steps, c)`` forecast after ``n`` observations (``None``: not ready)."""

    def get_state(self) -> State: ...

    def set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None: ...


class LastValue:
    """The newest observation, for every step ahead (exact on a constant)."""

    name = "last"

    def advance(self, history: History, n: int) -> None:
        pass

    def forecast(self, history: History, n: int, steps: int) -> np.ndarray | None:
        if n < 1:
            return None
        return np.repeat(history.last(1), steps, axis=0)

    def get_state(self) -> State:
        return {}, {}

    def set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        pass


class SeasonalNaive:
    """The value one period earlier (exact on a pure season of that period).

    The period is read from ``period_of()`` (a `PeriodFinder` slot) at each forecast;
    with no period known the expert abstains. With ``drift``, each season ahead adds
    the change of level between the last two seasons (their means), as a seasonal
    random walk with drift does (exact on a season plus a linear trend).
    """

    def __init__(self, name: str, period_of: Any, drift: bool = False) -> None:
        self.name = name
        self.period_of = period_of
        self.drift = drift

    def advance(self, history: History, n: int) -> None:
        pass

    def forecast(self, history: History, n: int, steps: int) -> np.ndarray | None:
        period = self.period_of()
        span = 2 * period if period is not None and self.drift else period
        if period is None or span is None or n < span or history.length < span:
            return None
        phase, seasons = _season_steps(steps, period)
        if not self.drift:
            return history.last(period)[phase]
        both = history.last(span)
        season = both[period:]
        change = (season.sum(axis=0) - both[:period].sum(axis=0)) / period  # of the mean
        # Season k ahead (k = 1, 2, ...) sits k changes of level above the last one.
        lifts = seasons * change[None, :]
        return season[phase] + lifts

    def get_state(self) -> State:
        return {}, {}

    def set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        pass


#: `_season_steps` by ``(steps, period)``: every forecast asks for the same few.
_SEASON_STEPS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _season_steps(steps: int, period: int) -> tuple[np.ndarray, np.ndarray]:
    """Of steps ``1..steps`` ahead: the phase in the last season, and the season count
    ``(steps, 1)`` (read-only)."""
    found = _SEASON_STEPS.get((steps, period))
    if found is None:
        ahead = np.arange(steps)
        phase, seasons = ahead % period, (ahead // period + 1)[:, None]
        phase.flags.writeable = seasons.flags.writeable = False
        if len(_SEASON_STEPS) > 256:  # only from unusual horizons; cheap to make again
            _SEASON_STEPS.clear()
        found = _SEASON_STEPS[(steps, period)] = (phase, seasons)
    return found


class DampedTrend:
    """Additive damped-trend exponential smoothing with fixed smoothing parameters.

    ``level_t = a y_t + (1-a)(level + phi trend)``,
    ``trend_t = b (level_t - level) + (1-b) phi trend``: a linear recursion in
    ``(level, trend)``, so a block of ``k`` observations is absorbed by one product
    with precomputed powers of its transition matrix. Forecast ``h`` steps ahead:
    ``level + (phi + ... + phi^h) trend`` (exact on a linear trend with ``phi = 1``).
    """

    def __init__(
        self, block: int, alpha: float, beta: float, phi: float, name: str = "damped"
    ) -> None:
        self.name, self.block, self.phi = name, block, phi
        self.transition = np.array(
            [[1 - alpha, (1 - alpha) * phi], [-alpha * beta, phi * (1 - alpha * beta)]]
        )
        self.gain = np.array([alpha, alpha * beta])
        # k -> (A^k, (2, k) weights of k new rows, oldest first): made once per k used.
        self._blocks: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.state: np.ndarray | None = None  # (2, c): level and trend
        self._damping: dict[int, np.ndarray] = {}  # steps -> (steps, 1) damped sums

    def _rolled(self, state: np.ndarray, rows: np.ndarray) -> np.ndarray:
        k = rows.shape[0]
        if k == 0:
            return state
        block = self._blocks.get(k)
        if block is None:
            powers = [np.linalg.matrix_power(self.transition, j) for j in range(k + 1)]
            weights = np.stack([powers[k - 1 - j] @ self.gain for j in range(k)], axis=1)
            block = self._blocks[k] = (powers[k], weights.reshape(2, k))
        return block[0] @ state + block[1] @ rows

    def advance(self, history: History, n: int) -> None:
        if self.state is None:
            rows = history.last(min(n, self.block))
            start = np.stack([rows[0], np.zeros_like(rows[0])])
            self.state = self._rolled(start, rows[1:])
        else:
            self.state = self._rolled(self.state, history.last(self.block))

    def forecast(self, history: History, n: int, steps: int) -> np.ndarray | None:
        if self.state is None:
            return None
        since = n % self.block
        state = self._rolled(self.state, history.last(since)) if since else self.state
        damping = self._damping.get(steps)
        if damping is None:  # a function of phi and steps: made once per horizon asked
            damping = self._damping[steps] = np.cumsum(self.phi ** np.arange(1, steps + 1))[:, None]
        return state[0][None, :] + damping * state[1][None, :]

    def get_state(self) -> State:
        return {"ready": self.state is not None}, (
            {} if self.state is None else {"state": self.state.copy()}
        )

    def set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.state = np.array(arrays["state"], dtype=np.float64) if meta["ready"] else None


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
        self.powers: np.ndarray | None = None  # companion powers of `coef` (derived, cached)
        self._lags: dict[int, np.ndarray] = {}  # k -> row of each lag of k rows (fixed)
        self._eye = np.eye(order + 1)

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
            self._lags[k] = lag_rows
        x = np.empty((c, k, p + 1))
        x[:, :, 0] = 1.0
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
            trace = np.trace(self.normal, axis1=1, axis2=2)
            ridge = 1e-9 * (trace + 1.0) / (p + 1)
            system = self.normal + ridge[:, None, None] * self._eye
            self.coef = _solve(system, self.moment[:, :, None])[:, :, 0]
            self.powers = None

    def forecast(self, history: History, n: int, steps: int) -> np.ndarray | None:
        if self.coef is None or self.anchor is None:
            return None
        return self._ahead(history.last(self.order) - self.anchor, steps) + self.anchor

    def _ahead(self, rows: np.ndarray, steps: int) -> np.ndarray:
        """``(steps, c)`` iterated forecasts after the newest ``p`` rows ``(p, c)``."""
        paths = self._paths(steps)  # (c, >= steps, p+1)
        lags = rows[::-1].T  # (c, p): newest first
        # (Its memory layout, which concatenate picks, sets einsum's order of summation.)
        z = np.concatenate([np.ones((lags.shape[0], 1)), lags], axis=1)
        return np.einsum("chi,ci->hc", paths[:, :steps], z)

    def _paths(self, steps: int) -> np.ndarray:
        """Row ``h`` maps the state ``[1, y_n, ..., y_{n-p+1}]`` to the forecast ``h+1`` ahead.

        The rows are the second rows of the companion matrix's powers, by doubling
        (a few batched products per new coefficient set). A longer request only
        appends powers, so earlier rows never change.
        """
        if self.powers is None:
            assert self.coef is not None
            c, p = self.coef.shape[0], self.order
            companion = np.zeros((c, p + 1, p + 1))
            companion[:, 0, 0] = 1.0
            companion[:, 1, :] = self.coef
            for i in range(1, p):
                companion[:, i + 1, i] = 1.0
            self.powers = companion[:, None]  # (c, m, p+1, p+1): F^1..F^m
        while self.powers.shape[1] < steps:
            top = self.powers[:, -1:]  # F^m
            self.powers = np.concatenate([self.powers, top @ self.powers], axis=1)
        return self.powers[:, :, 1, :]

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
        def read(name: str) -> np.ndarray:
            return np.array(arrays[name], dtype=np.float64)

        self.seen = int(meta["seen"])
        self.powers = None
        self.anchor = self.normal = self.moment = self.coef = None
        if meta["anchored"]:
            self.anchor, self.normal, self.moment = read("anchor"), read("normal"), read("moment")
        if meta["fitted"]:
            self.coef = read("coef")


class SeasonalAR(LocalAR):
    """A local AR on the seasonal differences ``y_t - y_{t-P}`` at a detected period ``P``.

    Differencing at the period removes a fixed season and turns a linear trend into
    a constant (the AR's intercept); a short AR models what is left, the season's
    year-on-year drift. It is a SARIMA(p,0,0)(0,1,0)_P with drift, fitted online by
    `LocalAR`'s weighted least squares on the differences. The period is read from
    ``period_of()`` at each boundary: when it first appears or changes, the normal
    equations are rebuilt from every row the history holds, so the expert is ready
    as soon as a period is. With no period it abstains. The forecast iterates the
    AR on the differences and adds them back one period at a time (exact on a
    season plus a linear trend, and on a season whose changes from one period to
    the next follow an AR(``order``)).
    """

    def __init__(
        self, name: str, period_of: Any, block: int, order: int, forgetting: float
    ) -> None:
        super().__init__(block, order, forgetting, name)
        self.period_of = period_of
        self.period: int | None = None  # the period of the normal equations

    def advance(self, history: History, n: int) -> None:
        period, p = self.period_of(), self.order
        if period != self.period:  # start again at the new period, from the whole history
            self.anchor = self.normal = self.moment = self.coef = self.powers = None
            self.period, self.seen = period, 0
            k = min(n, history.length) - (period or 0) - p
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
        rows = history.last(period + p)
        changes = self._ahead(rows[period:] - rows[:-period], steps)  # (steps, c)
        out = np.empty_like(changes)
        previous = rows[p:]  # the last period, then each forecast period in turn
        for start in range(0, steps, period):
            previous = previous[: min(period, steps - start)] + changes[start : start + period]
            out[start : start + period] = previous
        return out

    def get_state(self) -> State:
        meta, arrays = super().get_state()
        return meta | {"period": self.period}, arrays

    def set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        super().set_state(meta, arrays)
        self.period = None if meta["period"] is None else int(meta["period"])


def _singular(err: object, flag: object) -> None:
    raise np.linalg.LinAlgError("Singular matrix")


def _solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.linalg.solve(a, b)`` of stacked real ``(..., M, M)`` and ``(..., M, K)``: the same
    LAPACK gufunc and error handling, without the wrapper (a tenth of the AR's block)."""
    with np.errstate(
        call=_singular, invalid="call", over="ignore", divide="ignore", under="ignore"
    ):  # type: ignore[arg-type]
        return _umath_linalg.solve(a, b, signature="dd->d")


#: Delay embeddings offered as extra Koopman experts (``koopman<delays>``), off by default.
KOOPMAN_SCALES = (12, 16, 24, 48)
#: The classical experts a model can use (``ModelConfig.classical_experts``).
CLASSICAL_EXPERTS = (
    "last",
    "seasonal",
    "seasonal_drift",
    "damped",
    "ar",
    "seasonal_ar",
    *(f"koopman{d}" for d in KOOPMAN_SCALES),
)
#: Seasonal naive experts (one per detected period), the AR order and its forgetting factor.
SEASONAL_SLOTS = 2
AR_ORDER = 8
AR_FORGETTING = 0.995
#: The AR on seasonal differences (one per detected period): its order and forgetting factor.
SEASONAL_AR_ORDER = 2
SEASONAL_AR_FORGETTING = 0.995
#: Damped trend: level and trend smoothing, and the damping of the trend.
DAMPED = (0.5, 0.1, 0.9)
#: Observations the period finder reads, and how often it looks (in blocks).
PERIOD_WINDOW = 600
PERIOD_BLOCKS = 8
#: Below this many blocks the finder looks at every block; and it removes a linear trend.
PERIOD_EARLY_BLOCKS = 16
PERIOD_DETREND = True


class ExpertBank:
    """The classical experts of a model, advanced together at block boundaries."""

    def __init__(self, kinds: list[str], block: int) -> None:
        self.block = block
        self.finder = PeriodFinder(
            SEASONAL_SLOTS,
            block * PERIOD_BLOCKS,
            PERIOD_WINDOW,
            early=block * PERIOD_EARLY_BLOCKS,
            detrend=PERIOD_DETREND,
        )
        self.experts: list[Expert] = []
        for kind in kinds:
            if kind == "last":
                self.experts.append(LastValue())
            elif kind == "seasonal":
                for slot in range(SEASONAL_SLOTS):
                    name = f"seasonal{slot + 1}"
                    self.experts.append(SeasonalNaive(name, _slot(self.finder, slot)))
            elif kind == "seasonal_drift":
                for slot in range(SEASONAL_SLOTS):
                    name = f"seasonal_drift{slot + 1}"
                    self.experts.append(SeasonalNaive(name, _slot(self.finder, slot), drift=True))
            elif kind == "damped":
                self.experts.append(DampedTrend(block, *DAMPED))
            elif kind == "ar":
                self.experts.append(LocalAR(block, AR_ORDER, AR_FORGETTING))
            elif kind == "seasonal_ar":
                for slot in range(SEASONAL_SLOTS):
                    self.experts.append(
                        SeasonalAR(
                            f"seasonal_ar{slot + 1}",
                            _slot(self.finder, slot),
                            block,
                            SEASONAL_AR_ORDER,
                            SEASONAL_AR_FORGETTING,
                        )
                    )
            elif kind.startswith("koopman") and kind in CLASSICAL_EXPERTS:
                self.experts.append(KoopmanExpert(kind, int(kind.removeprefix("koopman")), block))
            else:
                raise ValueError(f"unknown classical expert {kind!r}; known: {CLASSICAL_EXPERTS}")
        self.names = [e.name for e in self.experts]
        self.seasonal = bool({"seasonal", "seasonal_drift", "seasonal_ar"} & set(kinds))

    def advance(self, history: History, n: int) -> None:
        """Call after every observation: absorbs a block when ``n`` is a boundary."""
        if n % self.block:
            return
        if self.seasonal:
            self.finder.advance(history, n)
        for expert in self.experts:
            expert.advance(history, n)

    def forecast(self, history: History, n: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """``(tracks (E, steps, c), available (E,))``; zeros where an expert abstains."""
        c = history.last(1).shape[1]
        tracks = np.zeros((len(self.experts), steps, c))
        ready = []
        for i, expert in enumerate(self.experts):
            path = expert.forecast(history, n, steps)
            if path is not None:
                tracks[i] = path
            ready.append(path is not None)
        return tracks, np.array(ready, dtype=bool)

    def components(self) -> dict[str, Any]:
        """Each expert, and the period finder, as a component of the model."""
        parts: dict[str, Any] = {f"expert_{e.name}": e for e in self.experts}
        if self.seasonal:
            parts["periods"] = self.finder
        return parts


def _slot(finder: PeriodFinder, slot: int) -> Any:
    return lambda: finder.period(slot)
