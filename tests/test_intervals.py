import numpy as np
import pytest

from episodic_koopman import EpisodicKoopman, ModelConfig
from episodic_koopman.intervals import ConformalCalibrator


def test_conformal_quantile_is_the_finite_sample_order_statistic():
    cal = ConformalCalibrator(horizon=1, n_channels=1, window=100, min_samples=1)
    errors = np.arange(1, 20, dtype=float)  # 19 scores: 1..19
    for e in errors:
        cal.update(np.array([[e]]), np.zeros((1, 1)))
    # ceil((19 + 1) * 0.9) = 18th smallest score = 18.
    hw = cal.half_width(0.9, np.zeros((1, 1)), steps=1, fallback_scale=np.ones(1))
    assert hw[0, 0] == 18.0


def test_spread_widens_and_narrows_the_interval():
    cal = ConformalCalibrator(horizon=1, n_channels=1, window=100, min_samples=1)
    rng = np.random.default_rng(0)
    for _ in range(100):
        s = rng.uniform(0.5, 1.5)
        cal.update(np.array([[rng.normal() * (1 + s)]]), np.array([[s]]))
    narrow = cal.half_width(0.9, np.zeros((1, 1)), 1, np.ones(1))[0, 0]
    wide = cal.half_width(0.9, np.array([[3.0]]), 1, np.ones(1))[0, 0]
    assert wide > 2 * narrow


def test_beyond_the_calibrated_horizon_width_grows_as_sqrt():
    cal = ConformalCalibrator(horizon=2, n_channels=1, window=10, min_samples=1)
    for _ in range(10):
        cal.update(np.array([[1.0], [1.0]]), np.zeros((2, 1)))
    hw = cal.half_width(0.5, np.zeros((2, 1)), steps=8, fallback_scale=np.ones(1))
    np.testing.assert_allclose(hw[:, 0], np.sqrt(np.maximum(np.arange(1, 9) / 2, 1.0)))


def test_model_coverage_is_near_nominal_on_noisy_seasonal_series():
    rng = np.random.default_rng(11)
    t = np.arange(6000)
    y = np.sin(2 * np.pi * t / 24) + 0.3 * rng.standard_normal(t.size)
    model = EpisodicKoopman(
        delays=24, window=192, memory=None, level=0.9, config=ModelConfig(stride=2)
    )
    model.learn_many(y)
    assert model.coverage == pytest.approx(0.9, abs=0.04)
    f = model.predict(horizon=24, level=0.8)
    assert np.all(f.upper > f.mean) and np.all(f.lower < f.mean)
