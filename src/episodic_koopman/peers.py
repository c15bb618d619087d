"""Peer forecasters for backtests, all behind river's ``learn_one``/``forecast`` contract.

* ``naive``: the last value (hard to beat at short horizons).
* ``snaive``: the value one season earlier.
* ``holtwinters``: river's additive Holt-Winters.
* ``snarimax``: river's SNARIMAX (p <= 12, d=1, q=2, seasonal difference) with a
  standardised linear regressor on a standardised target.
* ``autoets``, ``autoarima``, ``autotheta``, ``mstl``: statsforecast's AutoETS,
  AutoARIMA (approximated search, seasonal orders <= 1), AutoTheta and MSTL
  (several seasons, e.g. hourly data's daily and weekly ones). Each is refitted
  every `REFIT_EVERY` (50) origins on a trailing window of `MAX_TRAIN` (1000)
  observations, or 6 periods of MSTL's longest season if longer, and applied in
  between with ``forward`` to the data since that refit's start. They give
  intervals (``forecast_intervals``). Optional: the ``peers`` extra.

Every peer returns the last value until it has enough data to do better, so no
peer ever raises during a backtest. When a fit fails, or a fitted model gives
non-finite (or, for river's, diverged) forecasts, the peer falls back to the last
value too, and counts it in its ``fallbacks`` attribute.
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


class Naive:
    """Forecast the last observed value."""

    def __init__(self) -> None:
        self._last = 0.0

    def learn_one(self, y: float, x: dict | None = None) -> None:
        self._last = float(y)

    def forecast(self, horizon: int, xs: list | None = None) -> list[float]:
        return [self._last] * horizon


class SeasonalNaive:
    """Forecast ``y[t + h - season * k]``, the same point of the last observed season."""

    def __init__(self, season: int) -> None:
        self.season = season
        self._recent: deque[float] = deque(maxlen=season)

    def learn_one(self, y: float, x: dict | None = None) -> None:
        self._recent.append(float(y))

    def forecast(self, horizon: int, xs: list | None = None) -> list[float]:
        if not self._recent:
            return [0.0] * horizon
        if len(self._recent) < self.season:
            return [self._recent[-1]] * horizon
        return [self._recent[h % self.season] for h in range(horizon)]


class _WarmedUp:
    """Wrap a river forecaster: last value until ``warmup`` observations, then the model."""

    def __init__(self, model: Any, warmup: int) -> None:
        self.model = model
        self.warmup = warmup
        self._n = 0
        self._last = 0.0
        self.fallbacks = 0

    def learn_one(self, y: float, x: dict | None = None) -> None:
        self.model.learn_one(y)
        self._n += 1
        self._last = float(y)
        self._range = max(getattr(self, "_range", 0.0), abs(float(y)))

    def forecast(self, horizon: int, xs: list | None = None) -> list[float]:
        if self._n < self.warmup:
            return [self._last] * horizon
        out = [float(v) for v in self.model.forecast(horizon)]
        # A diverged online fit (non-finite, or 100x beyond anything seen) falls back to the
        # last value, so one unstable stretch does not swamp a peer's whole score.
        if not np.all(np.isfinite(out)) or max(abs(v) for v in out) > 100 * (self._range + 1):
            self.fallbacks += 1
            return [self._last] * horizon
        return out


def holt_winters(season: int | None) -> _WarmedUp:
    from river import time_series

    if season and season > 1:
        model = time_series.HoltWinters(alpha=0.3, beta=0.01, gamma=0.3, seasonality=season)
        return _WarmedUp(model, warmup=season + 1)
    return _WarmedUp(time_series.HoltWinters(alpha=0.3, beta=0.01), warmup=3)


def snarimax(season: int | None) -> _WarmedUp:
    from river import linear_model, optim, preprocessing, time_series

    m = season if season and season > 1 else 1
    # A standardised target and a small step keep SGD stable on counts in the hundreds;
    # with river's example settings (step 0.01, raw target) it diverged on bike share.
    regressor = preprocessing.StandardScaler() | preprocessing.TargetStandardScaler(
        linear_model.LinearRegression(
            intercept_init=0.0, optimizer=optim.SGD(0.001), intercept_lr=0.001
        )
    )
    model = time_series.SNARIMAX(
        p=min(m, 12) if m > 1 else 3, d=1, q=2, m=m, sd=1 if m > 1 else 0, regressor=regressor
    )
    return _WarmedUp(model, warmup=2 * m + 2)


#: statsforecast peers are refitted every this many forecast origins (and `forward`-applied
#: in between), so a backtest of N origins costs about N / 50 fits.
REFIT_EVERY = 50
#: Trailing training window (observations) of a refit; at least 6 periods of the longest season.
MAX_TRAIN = 1000
_EXTRA_HINT = "pip install 'episodic-koopman[peers]'"


def _statsforecast_models(peer: str) -> Any:
    """statsforecast's model classes, or an ImportError that names the extra to install."""
    try:
        from statsforecast import models
    except ImportError:
        raise ImportError(
            f"the {peer} peer needs statsforecast, in the 'peers' extra: {_EXTRA_HINT}"
        ) from None
    return models


class StatsForecastPeer:
    """A statsforecast model refitted every ``refit_every`` origins on a trailing window.

    At a refit the training window starts at ``max(0, n - max_train)`` and stays
    anchored there until the next refit: ``forward`` reuses the fitted
    parameters and initial states, whose seasonal phase is tied to that start.
    A failed fit or forward, or a non-finite forecast, gives the last value and
    counts in ``fallbacks``; the fit is retried at the next origin. Intervals are
    statsforecast's own (``level=``); a fallback's intervals are the point itself.
    """

    def __init__(
        self,
        factory: Callable[[], Any],
        min_train: int = 10,
        max_train: int = MAX_TRAIN,
        refit_every: int = REFIT_EVERY,
    ) -> None:
        self._factory = factory
        self.min_train = min_train
        self.max_train = max_train
        self.refit_every = refit_every
        self.fallbacks = 0
        self._y: list[float] = []
        self._model: Any = None
        self._anchor = 0
        self._calls = 0

    def learn_one(self, y: float, x: dict | None = None) -> None:
        self._y.append(float(y))

    def forecast(self, horizon: int, xs: list | None = None) -> list[float]:
        return self.forecast_intervals(horizon, ())[0]

    def forecast_intervals(
        self, horizon: int, levels: Sequence[float]
    ) -> tuple[list[float], dict[float, tuple[list[float], list[float]]]]:
        """Point forecast and central intervals ``{level: (lower, upper)}`` for ``levels``."""
        last = self._y[-1] if self._y else 0.0
        if len(self._y) < self.min_train:
            return _flat(last, horizon, levels)  # warming up: not a fallback
        refit = self._model is None or self._calls % self.refit_every == 0
        self._calls += 1
        try:
            with warnings.catch_warnings():
                # statsforecast warns on every slow optimiser convergence; the score says enough.
                warnings.simplefilter("ignore")
                if refit:
                    self._model = None
                    self._anchor = max(0, len(self._y) - self.max_train)
                    self._model = self._factory().fit(np.asarray(self._y[self._anchor :]))
                train = np.asarray(self._y[self._anchor :], dtype=np.float64)
                percents = [round(100 * level) for level in levels]
                out = self._model.forward(y=train, h=horizon, level=percents or None)
            mean = [float(v) for v in out["mean"]]
            bands = {
                level: (
                    [float(v) for v in out[f"lo-{p}"]],
                    [float(v) for v in out[f"hi-{p}"]],
                )
                for level, p in zip(levels, percents, strict=True)
            }
        except Exception:
            # Any failure inside statsforecast (singular fits, too short a window...) is a
            # fallback, counted, never a crash of the whole backtest.
            self.fallbacks += 1
            return _flat(last, horizon, levels)
        finite = np.all(np.isfinite(mean)) and all(
            np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) for lo, hi in bands.values()
        )
        if not finite:
            self.fallbacks += 1
            return _flat(last, horizon, levels)
        return mean, bands


def _flat(
    value: float, horizon: int, levels: Sequence[float]
) -> tuple[list[float], dict[float, tuple[list[float], list[float]]]]:
    point = [value] * horizon
    return point, {level: (list(point), list(point)) for level in levels}


def _season_length(season: int | None) -> int:
    return season if season and season > 1 else 1


def auto_ets(season: int | None) -> StatsForecastPeer:
    models = _statsforecast_models("autoets")
    return StatsForecastPeer(lambda: models.AutoETS(season_length=_season_length(season)))


def auto_arima(season: int | None) -> StatsForecastPeer:
    models = _statsforecast_models("autoarima")
    # approximation=True (CSS-based order search, then an exact fit of the chosen order), as
    # R's auto.arima does for long series, and seasonal orders P, Q <= 1: the exact search
    # took ~30 s a fit on 1000 hourly values (~2 s approximated, same order chosen on bike
    # share), and with P, Q <= 2 minutes a fit on weekly ILINet (season 52; ~15 s capped).
    return StatsForecastPeer(
        lambda: models.AutoARIMA(
            season_length=_season_length(season), approximation=True, max_P=1, max_Q=1
        )
    )


def auto_theta(season: int | None) -> StatsForecastPeer:
    models = _statsforecast_models("autotheta")
    return StatsForecastPeer(lambda: models.AutoTheta(season_length=_season_length(season)))


def mstl(season: int | None, seasons: Sequence[int] | None = None) -> StatsForecastPeer:
    """MSTL (an STL per season, AutoETS on the trend) for series with several seasons."""
    models = _statsforecast_models("mstl")
    periods = sorted({p for p in (seasons or ([season] if season else [])) if p > 1})
    if not periods:
        raise ValueError("the mstl peer needs a season (--season, or --seasons 24,168)")
    longest = periods[-1]
    return StatsForecastPeer(
        lambda: models.MSTL(season_length=list(periods)),
        min_train=2 * longest + 1,
        max_train=max(MAX_TRAIN, 6 * longest),
    )


def statsforecast_available() -> bool:
    try:
        import statsforecast  # noqa: F401
    except ImportError:
        return False
    return True


#: Kept for the callers that predate the other statsforecast peers.
autoets_available = statsforecast_available

PEERS = (
    "naive",
    "snaive",
    "holtwinters",
    "snarimax",
    "autoets",
    "autoarima",
    "autotheta",
    "mstl",
)
#: Peers from statsforecast (the ``peers`` extra).
STATSFORECAST_PEERS = ("autoets", "autoarima", "autotheta", "mstl")


def make_peer(name: str, season: int | None, seasons: Sequence[int] | None = None) -> Any:
    """A fresh peer forecaster called ``name`` (``seasons``: MSTL's periods)."""
    if name == "naive":
        return Naive()
    if name == "snaive":
        return SeasonalNaive(season if season and season > 1 else 1)
    if name == "holtwinters":
        return holt_winters(season)
    if name == "snarimax":
        return snarimax(season)
    if name == "autoets":
        return auto_ets(season)
    if name == "autoarima":
        return auto_arima(season)
    if name == "autotheta":
        return auto_theta(season)
    if name == "mstl":
        return mstl(season, seasons)
    raise ValueError(f"unknown peer {name!r}; known: {list(PEERS)}")
