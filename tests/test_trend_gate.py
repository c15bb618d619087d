"""The trend gate: each fit is detrended where a trend rules the operator's span, only there."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_same_state, state_fingerprint

from episodic_koopman import EpisodicKoopman, ModelConfig
from episodic_koopman.trend_gate import TREND_GATE, trend_rise


def seasonal(n: int, slope: float, seed: int = 0) -> np.ndarray:
    """A season of 12 with a little noise, on a line of ``slope`` per step."""
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64)
    return 100.0 + slope * t + 10.0 * np.sin(2 * np.pi * t / 12) + rng.standard_normal(n)


def fit_in_force(model: EpisodicKoopman):
    fit = model.components()["in_force"].fit
    assert fit is not None
    return fit


def test_rise_is_in_residual_deviations_whatever_the_units():
    values = seasonal(150, 1.0)[:, None]
    rise = trend_rise(values)
    assert rise > TREND_GATE
    assert trend_rise(3.0 * values - 7.0) == pytest.approx(rise, rel=1e-12)
    assert trend_rise(seasonal(150, 0.0)[:, None]) < 1.0  # a season alone
    assert trend_rise(np.full((20, 1), 5.0)) == 0.0  # constant: no trend
    assert trend_rise(np.arange(10.0)[:, None]) == np.inf  # an exact line: all trend
    assert trend_rise(np.zeros((2, 1))) == 0.0  # too short to say
    both = np.stack([seasonal(150, 1.0), seasonal(150, 0.0, seed=1)], axis=1)
    each = [trend_rise(both[:, [j]].copy()) for j in range(2)]
    assert trend_rise(both) == pytest.approx(np.mean(each), rel=1e-12)


def test_a_climbing_series_is_fitted_detrended_and_a_level_one_is_not():
    climbing, level = EpisodicKoopman(), EpisodicKoopman()
    climbing.learn_many(seasonal(144, 1.0))
    level.learn_many(seasonal(144, 0.0))
    assert fit_in_force(climbing).trend is not None
    assert fit_in_force(level).trend is None
    off = EpisodicKoopman(config=ModelConfig(trend_gate=None))
    off.learn_many(seasonal(144, 1.0))
    assert fit_in_force(off).trend is None
    # Detrended, the forecast keeps climbing over a season (a Koopman forecast with its
    # eigenvalues on the unit circle could not): the next season sits above the last.
    ahead = np.array(climbing.forecast(12))
    assert ahead.mean() > seasonal(144, 1.0)[-12:].mean() + 6.0


def test_the_transfer_expert_turns_the_gate_off():
    model = EpisodicKoopman.from_flat({"experts": "analog,transfer"})
    model.learn_many(seasonal(144, 1.0))
    assert fit_in_force(model).trend is None


def test_detrend_true_detrends_every_fit_whatever_the_gate():
    model = EpisodicKoopman(config=ModelConfig(detrend=True))
    model.learn_many(seasonal(144, 0.0))
    assert fit_in_force(model).trend is not None


def crossing(n: int = 400) -> np.ndarray:
    """Level for 200 steps, then climbing: the gate opens part-way."""
    values = seasonal(n, 0.0, seed=3)
    values[200:] += 0.6 * np.arange(n - 200)
    return values


def test_a_gate_that_opens_mid_stream_keeps_chunkings_and_save_load_identical(tmp_path):
    values = crossing()
    one = EpisodicKoopman(delays=16, window=64)
    trends = []
    for value in values:
        one.learn_one(float(value))
        if one.is_fitted:
            trends.append(fit_in_force(one).trend is not None)
    assert not trends[0] and trends[-1]  # the gate did open
    reference = state_fingerprint(one)
    for cuts in ([250], [1, 199, 203, 310]):
        model = EpisodicKoopman(delays=16, window=64)
        for chunk in np.split(values, cuts):
            model.learn_many(chunk)
            model.forecast(5)
        assert_same_state(reference, state_fingerprint(model))
        assert model.forecast(24) == one.forecast(24)
    saved = EpisodicKoopman(delays=16, window=64)
    saved.learn_many(values[:260])
    path = tmp_path / "gate.ekm"
    saved.save(path)
    loaded = EpisodicKoopman.load(path)
    loaded.learn_many(values[260:])
    assert loaded.forecast(24) == one.forecast(24)


def test_the_reference_forecast_follows_the_fit_in_force_through_the_gate(tmp_path):
    values = crossing()
    model = EpisodicKoopman(delays=16, window=64, memory=None, config=ModelConfig(stride=1))
    model.learn_many(values)
    assert fit_in_force(model).trend is not None
    path = tmp_path / "gate.ekm"
    model.save(path)
    loaded = EpisodicKoopman.load(path)  # the operator's own flag is not saved: the fit is
    plain = loaded.components()["operator"]
    fit = fit_in_force(loaded)
    ours = loaded.components()["observables"].to_raw(
        plain.propagate(fit, 12, loaded.components()["observables"].embedding.readout)
    )
    np.testing.assert_allclose(loaded.reference_forecast(12), ours, rtol=1e-6, atol=1e-6)
