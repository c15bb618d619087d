"""Peers: fallbacks are counted (never raised), refits are scheduled, extras are named."""

import sys
from typing import ClassVar

import numpy as np
import pytest

from episodic_koopman.evaluation import backtest, model_factories
from episodic_koopman.interval_scores import WIS_LEVELS
from episodic_koopman.peers import (
    REFIT_EVERY,
    STATSFORECAST_PEERS,
    StatsForecastPeer,
    make_peer,
    statsforecast_available,
)

needs_statsforecast = pytest.mark.skipif(
    not statsforecast_available(),
    reason="statsforecast is not installed (pip install 'episodic-koopman[peers]')",
)


class _FailingFit:
    def fit(self, y):
        raise RuntimeError("singular")


class _CountingModel:
    """Forecasts the mean of what `forward` is given; counts its fits."""

    fits: ClassVar[list[int]] = []

    def fit(self, y):
        _CountingModel.fits.append(len(y))
        return self

    def forward(self, y, h, level=None):
        out = {"mean": np.full(h, float(np.mean(y)))}
        for p in level or []:
            out[f"lo-{p}"], out[f"hi-{p}"] = out["mean"] - p, out["mean"] + p
        return out


def test_a_failed_fit_falls_back_to_the_last_value_and_is_counted():
    # The AutoETS wrapper used to raise UnboundLocalError here (its except clause read a
    # variable set after the fit), so failures were never counted.
    peer = StatsForecastPeer(_FailingFit)
    for v in range(1, 21):
        peer.learn_one(float(v))
    mean, bands = peer.forecast_intervals(3, WIS_LEVELS)
    assert mean == [20.0] * 3 and peer.fallbacks == 1
    assert bands[0.5] == ([20.0] * 3, [20.0] * 3)  # a fallback's interval is the point
    assert peer.forecast(2) == [20.0, 20.0] and peer.fallbacks == 2


def test_fallbacks_reach_the_backtest_json():
    y = np.arange(60.0)
    result = backtest(y, {"failing": lambda: StatsForecastPeer(_FailingFit)}, 2, start=30)
    row = result.to_json()["models"]["failing"]
    assert row["fallbacks"] == result.origins.size == 28
    assert row["mae"] == pytest.approx(1.5)  # the naive forecast's error


def test_refits_every_k_origins_on_a_trailing_window():
    _CountingModel.fits = []
    peer = StatsForecastPeer(_CountingModel, max_train=30, refit_every=5)
    for t in range(100):
        peer.learn_one(float(t))
        if t >= 40:
            peer.forecast(1)
    assert len(_CountingModel.fits) == 12  # origins 40, 45, ..., 95
    assert set(_CountingModel.fits) == {30}
    assert REFIT_EVERY == 50


@needs_statsforecast
def test_autoets_counts_a_failed_fit():
    peer = make_peer("autoets", 12)
    y = list(100 + 10 * np.sin(2 * np.pi * np.arange(40) / 12))
    y[20] = float("nan")  # AutoETS cannot fit through it
    for v in y:
        peer.learn_one(v)
    assert peer.forecast(3) == [y[-1]] * 3
    assert peer.fallbacks == 1


@needs_statsforecast
@pytest.mark.parametrize("name", STATSFORECAST_PEERS)
def test_statsforecast_peers_give_nested_intervals(name):
    y = 50 + 10 * np.sin(2 * np.pi * np.arange(400) / 24)
    y += np.random.default_rng(0).normal(0, 1, 400)
    peer = make_peer(name, 24, seasons=[24, 48])
    for v in y:
        peer.learn_one(float(v))
    mean, bands = peer.forecast_intervals(6, WIS_LEVELS)
    assert peer.fallbacks == 0 and np.all(np.isfinite(mean))
    lo = [np.array(bands[lv][0]) for lv in WIS_LEVELS]
    hi = [np.array(bands[lv][1]) for lv in WIS_LEVELS]
    assert np.all(lo[2] <= lo[1]) and np.all(lo[1] <= lo[0]) and np.all(lo[0] <= mean)
    assert np.all(mean <= hi[0]) and np.all(hi[0] <= hi[1]) and np.all(hi[1] <= hi[2])


def test_mstl_without_a_season_is_a_clear_error():
    if not statsforecast_available():
        pytest.skip("statsforecast is not installed (pip install 'episodic-koopman[peers]')")
    with pytest.raises(ValueError, match="needs a season"):
        make_peer("mstl", None)


@pytest.mark.parametrize("name", STATSFORECAST_PEERS)
def test_a_missing_extra_names_the_extra(monkeypatch, name):
    monkeypatch.setitem(sys.modules, "statsforecast", None)  # import fails as if absent
    with pytest.raises(ImportError, match=r"pip install 'episodic-koopman\[peers\]'"):
        model_factories([name], 24)
