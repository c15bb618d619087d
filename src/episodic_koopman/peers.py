"""Peer forecasters for backtests, all behind river's ``learn_one``/``forecast`` contract.

* ``naive``: the last value (hard to beat at short horizons).
* ``snaive``: the value one season earlier.
* ``holtwinters``: river's additive Holt-Winters.
* ``snarimax``: river's SNARIMAX (p <= 12, d=1, q=2, seasonal difference) with a
  standardised linear regressor on a standardised target.
* ``autoets``: statsforecast's AutoETS, refitted every ``refit_every`` origins
  on (at most) the last ``max_train`` observations, and applied in between with
  ``forward`` to the data since that refit's start. Optional: the ``peers`` extra.

Every peer returns the last value until it has enough data to do better, so no
peer ever raises during a backtest.
"""

from __future__ import annotations

from collections import deque
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


class AutoETS:
    """statsforecast AutoETS, refitted every ``refit_every`` origins (forecasts via ``forward``)."""

    def __init__(self, season: int | None, refit_every: int = 50, max_train: int = 1000) -> None:
        try:
            from statsforecast.models import AutoETS as _AutoETS  # optional extra
        except ImportError:
            raise ImportError(
                "the autoets model needs statsforecast: pip install 'episodic-koopman[peers]'"
            ) from None

        self._factory = lambda: _AutoETS(season_length=season if season and season > 1 else 1)
        self.refit_every = refit_every
        self.max_train = max_train
        self._y: list[float] = []
        self._model: Any = None
        self._calls = 0

    def learn_one(self, y: float, x: dict | None = None) -> None:
        self._y.append(float(y))

    def forecast(self, horizon: int, xs: list | None = None) -> list[float]:
        if len(self._y) < 10:
            return [self._y[-1] if self._y else 0.0] * horizon
        try:
            if self._model is None or self._calls % self.refit_every == 0:
                # The training window starts at a fixed anchor until the next refit: `forward`
                # reuses the fitted initial states, whose seasonal phase is tied to that start.
                self._anchor = max(0, len(self._y) - self.max_train)
                self._model = self._factory().fit(np.asarray(self._y[self._anchor :]))
            self._calls += 1
            train = np.asarray(self._y[self._anchor :], dtype=np.float64)
            out = self._model.forward(y=train, h=horizon)["mean"]
        except Exception:
            return [float(train[-1])] * horizon
        out = [float(v) for v in out]
        return out if np.all(np.isfinite(out)) else [float(train[-1])] * horizon


def autoets_available() -> bool:
    try:
        import statsforecast  # noqa: F401
    except ImportError:
        return False
    return True


PEERS = ("naive", "snaive", "holtwinters", "snarimax", "autoets")


def make_peer(name: str, season: int | None) -> Any:
    """A fresh peer forecaster called ``name``."""
    if name == "naive":
        return Naive()
    if name == "snaive":
        return SeasonalNaive(season if season and season > 1 else 1)
    if name == "holtwinters":
        return holt_winters(season)
    if name == "snarimax":
        return snarimax(season)
    if name == "autoets":
        return AutoETS(season)
    raise ValueError(f"unknown peer {name!r}; known: {list(PEERS)}")
