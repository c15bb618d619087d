import numpy as np
import pytest

from episodic_koopman.evaluation import (
    backtest,
    coverage,
    mae,
    model_factories,
    origins_for,
    rmse,
    seasonal_naive_scale,
    smape,
)
from episodic_koopman.peers import PEERS, STATSFORECAST_PEERS, Naive, SeasonalNaive, make_peer


def test_metrics_on_hand_computed_cases():
    truth = np.array([[1.0, -2.0], [0.0, 4.0]])
    pred = np.array([[2.0, -2.0], [0.0, 1.0]])
    assert mae(truth, pred) == pytest.approx(1.0)  # (1 + 0 + 0 + 3) / 4
    assert rmse(truth, pred) == pytest.approx(np.sqrt(10 / 4))
    # sMAPE: 2*1/3, 0, 0 (both zero), 2*3/5 -> mean * 100
    assert smape(truth, pred) == pytest.approx(100 * (2 / 3 + 6 / 5) / 4)
    assert coverage(truth, pred - 0.5, pred + 0.5) == pytest.approx(0.5)
    # Seasonal naive scale with season 2 on [1, 2, 4, 8]: |4-1|, |8-2| -> 4.5
    assert seasonal_naive_scale(np.array([1.0, 2.0, 4.0, 8.0]), 2) == pytest.approx(4.5)
    assert seasonal_naive_scale(np.array([1.0, 2.0, 4.0]), None) == pytest.approx(1.5)


def test_origins_leave_room_for_the_horizon():
    o = origins_for(20, horizon=3, start=10, stride=2)
    assert o.tolist() == [10, 12, 14, 16]
    assert (o + 3 < 20).all()


def test_backtest_scores_naive_exactly():
    y = np.arange(30.0)
    result = backtest(y, {"naive": Naive}, horizon=2, start=20, season=None)
    scores = result.scores()["naive"]
    # Forecast y[o] for y[o+1], y[o+2]: errors 1 and 2 at every origin.
    assert scores["mae"] == pytest.approx(1.5)
    assert scores["mae_by_h"] == pytest.approx([1.0, 2.0])
    assert scores["mase"] == pytest.approx(1.5)  # in-sample naive MAE is 1
    assert scores["coverage"] is None


def test_seasonal_naive_repeats_the_last_season():
    peer = SeasonalNaive(season=3)
    for v in [1, 2, 3, 4, 5, 6]:
        peer.learn_one(v)
    assert peer.forecast(5) == [4, 5, 6, 4, 5]


@pytest.mark.parametrize("name", [p for p in PEERS if p not in STATSFORECAST_PEERS])
def test_every_peer_forecasts_finite_values_from_the_first_step(name):
    peer = make_peer(name, season=12)
    assert len(peer.forecast(3)) == 3
    y = 100 + 10 * np.sin(2 * np.pi * np.arange(200) / 12)
    for v in y:
        peer.learn_one(float(v))
        out = peer.forecast(4)
        assert len(out) == 4 and np.all(np.isfinite(out))


def test_backtest_is_causal_poisoned_future_changes_nothing():
    rng = np.random.default_rng(0)
    y = np.sin(np.arange(800) * 0.3) + 0.1 * rng.standard_normal(800)
    poisoned = y.copy()
    cut = 600
    poisoned[cut + 1 :] = 1e6  # values after the last origin's horizon window start
    names = ["ek", "ek-nomem", "naive", "snaive", "holtwinters", "snarimax"]
    params = {"delays": 12, "window": 64, "episode_horizon": 8}
    kwargs = dict(horizon=5, start=400, stride=3, season=21, end=cut + 1)
    clean = backtest(y, model_factories(names, 21, params), **kwargs)
    dirty = backtest(poisoned, model_factories(names, 21, params), **kwargs)
    for name in names:
        np.testing.assert_array_equal(clean.runs[name].forecasts, dirty.runs[name].forecasts)


def test_json_document_has_the_contracted_schema():
    y = np.sin(np.arange(300) * 0.4)
    result = backtest(
        y, model_factories(["ek", "naive"], None, {"delays": 8, "window": 32}), horizon=3, start=150
    )
    doc = result.to_json()
    assert doc["horizon"] == 3
    for name in ("ek", "naive"):
        row = doc["models"][name]
        assert set(row) >= {"mae", "rmse", "mase", "mae_by_h", "coverage", "seconds"}
        assert len(row["mae_by_h"]) == 3
    assert doc["models"]["naive"]["coverage"] is None
    assert 0.0 <= doc["models"]["ek"]["coverage"] <= 1.0
    assert doc["interval_levels"] == [0.5, 0.8, 0.95]
    ek, naive = doc["models"]["ek"], doc["models"]["naive"]
    assert ek["wis"] > 0 and isinstance(ek["fallbacks"], int)
    assert all(0.0 <= ek[f"coverage_{p}"] <= 1.0 for p in (50, 80, 95))
    assert naive["wis"] is None and naive["coverage_95"] is None and naive["fallbacks"] is None
    assert "channels" not in doc and "mae_by_channel" not in ek


def test_multichannel_backtest_runs_peers_per_channel_and_scores_the_target():
    t = np.arange(500)
    grid = np.column_stack([np.sin(t * 0.3), 10 + np.cos(t * 0.2), t * 0.01])
    names = ["x", "y", "z"]
    factories = model_factories(["ek", "naive"], None, {"delays": 8, "window": 64})
    result = backtest(grid, factories, horizon=3, start=300, stride=7, channels=names, target="y")
    single = backtest(grid[:, 1], {"naive": Naive}, horizon=3, start=300, stride=7)
    scores = result.scores()
    # The naive peer on channel y alone is the same as in a univariate backtest of y.
    assert scores["naive"]["mae"] == pytest.approx(single.scores()["naive"]["mae"])
    assert scores["naive"]["mae_by_channel"]["y"] == pytest.approx(scores["naive"]["mae"])
    assert scores["ek"]["mae_by_channel"]["y"] == pytest.approx(scores["ek"]["mae"])
    assert result.runs["ek"].channel_forecasts.shape == (result.origins.size, 3, 3)
    doc = result.to_json()
    assert doc["channels"] == names and doc["target"] == "y"
    with pytest.raises(ValueError, match="not a channel"):
        backtest(grid, factories, horizon=3, start=300, channels=names, target="w")
