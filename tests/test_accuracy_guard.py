"""Regression guards for the product's claim (small and fast; the benchmark is bench_accuracy)."""

from episodic_koopman import datasets
from episodic_koopman.evaluation import backtest, model_factories


def test_default_ek_clearly_beats_ek_nomem_on_recurring_regimes():
    series = datasets.switching_rotations(n=2400, seed=7)
    result = backtest(
        series.values, model_factories(["ek", "ek-nomem"], None), horizon=12, start=1200, stride=4
    )
    scores = result.scores()
    ratio = scores["ek"]["mae"] / scores["ek-nomem"]["mae"]
    assert ratio < 0.75, scores


def test_default_ek_does_not_hurt_a_stationary_series():
    series = datasets.stationary_control(n=2400, seed=8)
    result = backtest(
        series.values, model_factories(["ek", "ek-nomem"], 24), horizon=12, start=1200, stride=4
    )
    scores = result.scores()
    assert scores["ek"]["mae"] <= 1.02 * scores["ek-nomem"]["mae"], scores
    assert 0.8 <= scores["ek"]["coverage"] <= 0.97
