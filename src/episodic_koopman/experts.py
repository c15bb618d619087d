"""Cheap classical experts: the last value, seasonal naives, damped trend, local ARs, Theta.

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

from .autoregressive import LocalAR, SeasonalAR
from .components import State
from .embedding import History
from .koopman_expert import KoopmanExpert
from .periods import PeriodFinder
from .theta import Theta


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
    "theta",
    "theta_opt",
    "theta_seasonal",
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
#: The Theta experts: the smoothing constants they choose from (online, by block errors),
#: the share of the line's slope of each theta line (``theta``: the standard theta 2;
#: ``theta_opt`` also 4 and infinity, a whole slope), the forgetting of the line's points
#: (mean age 500, as a line fitted to a trailing 1000) and of the candidates' errors.
THETA_ALPHAS = (0.1, 0.2, 0.4, 0.7, 1.0)
THETA_WEIGHTS = (0.5,)
THETA_OPT_WEIGHTS = (0.5, 0.75, 1.0)
THETA_FORGETTING = 0.998
THETA_DISCOUNT = 0.97
#: ``theta_seasonal`` adjusts a positive series by seasonal ratios (as the Theta method
#: does), others by differences.
THETA_RATIOS = True
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
                            span=PERIOD_WINDOW,
                        )
                    )
            elif kind in ("theta", "theta_opt", "theta_seasonal"):
                weights = THETA_OPT_WEIGHTS if kind == "theta_opt" else THETA_WEIGHTS
                periods_of = self._periods if kind == "theta_seasonal" else None
                self.experts.append(
                    Theta(
                        kind,
                        block,
                        THETA_ALPHAS,
                        weights,
                        THETA_FORGETTING,
                        THETA_DISCOUNT,
                        periods_of=periods_of,
                        span=PERIOD_WINDOW,
                        multiplicative=THETA_RATIOS,
                    )
                )
            elif kind.startswith("koopman") and kind in CLASSICAL_EXPERTS:
                self.experts.append(KoopmanExpert(kind, int(kind.removeprefix("koopman")), block))
            else:
                raise ValueError(f"unknown classical expert {kind!r}; known: {CLASSICAL_EXPERTS}")
        self.names = [e.name for e in self.experts]
        self.seasonal = bool(
            {"seasonal", "seasonal_drift", "seasonal_ar", "theta_seasonal"} & set(kinds)
        )

    def _periods(self) -> list[int]:
        return self.finder.periods

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
