import numpy as np
import pytest

from episodic_koopman import EpisodicKoopman, ModelConfig, intervals
from episodic_koopman.intervals import ConformalCalibrator
from episodic_koopman.local_scale import local_scale

ONE = np.ones(1)


def test_conformal_quantile_interpolates_the_order_statistics():
    # min_samples = 19: no p-values are taken, so no recalibration either.
    cal = ConformalCalibrator(horizon=1, n_channels=1, window=100, min_samples=19)
    for e in np.arange(1, 20, dtype=float):  # 19 scores: 1..19
        cal.update(np.array([[e]]), np.zeros((1, 1)), ONE)

    def width(level: float) -> float:
        return float(cal.half_width(level, np.zeros((1, 1)), 1, ONE)[0, 0])

    # Rank (19 + 1) * level: 18 at 0.9, 17.5 between the 17th and 18th at 0.875.
    assert width(0.9) == pytest.approx(18.0)
    assert width(0.875) == pytest.approx(17.5)
    assert width(0.99) == 19.0  # beyond the largest score: the largest
    assert width(0.01) == 1.0


def test_scores_are_in_units_of_the_local_scale():
    cal = ConformalCalibrator(horizon=1, n_channels=1, window=100, min_samples=1)
    for e in np.linspace(1.0, 2.0, 50):
        cal.update(np.array([[e]]), np.zeros((1, 1)), ONE)
    base = cal.half_width(0.8, np.zeros((1, 1)), 1, ONE)[0, 0]
    assert cal.half_width(0.8, np.zeros((1, 1)), 1, 3 * ONE)[0, 0] == pytest.approx(3 * base)


def test_local_scale_is_the_median_absolute_change_with_a_floor():
    rows = np.array([[0.0, 5.0], [1.0, 5.0], [3.0, 5.0], [6.0, 5.0]])
    running = np.array([10.0, 10.0])
    # Changes 1, 2, 3 (median 2); a constant channel gets 1% of its running scale.
    np.testing.assert_array_equal(local_scale(rows, running), [2.0, 0.1])
    np.testing.assert_array_equal(local_scale(rows[:1], running), running)


def test_spread_widens_and_narrows_the_interval():
    cal = ConformalCalibrator(horizon=1, n_channels=1, window=100, min_samples=1)
    rng = np.random.default_rng(0)
    for _ in range(100):
        s = rng.uniform(0.5, 1.5)
        cal.update(np.array([[rng.normal() * (1 + s)]]), np.array([[s]]), ONE)
    narrow = cal.half_width(0.9, np.zeros((1, 1)), 1, ONE)[0, 0]
    wide = cal.half_width(0.9, np.array([[3.0]]), 1, ONE)[0, 0]
    assert wide > 2 * narrow


def test_beyond_the_calibrated_horizon_width_grows_as_sqrt():
    cal = ConformalCalibrator(horizon=2, n_channels=1, window=10, min_samples=1)
    for _ in range(10):
        cal.update(np.array([[1.0], [1.0]]), np.zeros((2, 1)), ONE)
    hw = cal.half_width(0.5, np.zeros((2, 1)), steps=8, scale=ONE)
    np.testing.assert_allclose(hw[:, 0], np.sqrt(np.maximum(np.arange(1, 9) / 2, 1.0)))


def _coverage(errors: np.ndarray, scales: np.ndarray, levels=(0.5, 0.8, 0.95), **kw) -> dict:
    """Online coverage of each level: an interval is issued before each error is scored."""
    horizon = errors.shape[1]
    cal = ConformalCalibrator(horizon=horizon, n_channels=1, **kw)
    hits = {level: [] for level in levels}
    for error, scale in zip(errors, scales, strict=True):
        for level in levels:
            half = cal.half_width(level, np.zeros((horizon, 1)), horizon, np.array([scale]))
            hits[level].append(np.abs(error) <= half)
        cal.update(error, np.zeros((horizon, 1)), np.array([scale]))
    return {level: float(np.mean(h[50:])) for level, h in hits.items()}


def test_coverage_is_nominal_on_iid_noise():
    errors = np.random.default_rng(1).standard_normal((3000, 2, 1))
    for level, cov in _coverage(errors, np.ones(3000), window=200).items():
        assert cov == pytest.approx(level, abs=0.02)


def test_coverage_is_nominal_under_an_exponentially_growing_scale():
    """Scores in units of a (lagging) local scale keep up with growth; raw ones do not."""
    t = np.arange(2000)
    growth = np.exp(t / 100.0)
    errors = np.random.default_rng(2).standard_normal((2000, 2, 1)) * growth[:, None, None]
    lagging = np.exp((t - 20) / 100.0)  # a scale measured over a trailing span
    for level, cov in _coverage(errors, lagging, window=200).items():
        assert cov == pytest.approx(level, abs=0.03)
    raw = _coverage(errors, np.ones(2000), levels=(0.9,), window=200)[0.9]
    assert raw < 0.86


def test_recalibration_corrects_an_interval_left_too_wide_by_old_scores(monkeypatch):
    """Errors halve; the window still holds the wide ones, so the raw quantile over-covers."""
    rng = np.random.default_rng(3)
    errors = (
        rng.standard_normal((1200, 1, 1)) * np.where(np.arange(1200) < 400, 1.0, 0.5)[:, None, None]
    )
    recalibrated = _coverage(errors[:1000], np.ones(1000), levels=(0.5,), window=1000)
    monkeypatch.setattr(intervals, "_RECALIBRATION_PRIOR", 1e18)
    raw = _coverage(errors[:1000], np.ones(1000), levels=(0.5,), window=1000)
    assert raw[0.5] > 0.6  # far too wide
    assert abs(recalibrated[0.5] - 0.5) < abs(raw[0.5] - 0.5) - 0.03


def test_state_round_trip_continues_bit_identically():
    rng = np.random.default_rng(4)
    a = ConformalCalibrator(horizon=3, n_channels=2, window=30, min_samples=5)
    for _ in range(40):
        a.update(rng.standard_normal((3, 2)), rng.uniform(0, 1, (3, 2)), rng.uniform(1, 2, 2))
    b = ConformalCalibrator(horizon=3, n_channels=2, window=30, min_samples=5)
    b.set_state({k: v.copy() for k, v in a.get_state().items()})
    for _ in range(10):
        errors, spread, scale = rng.standard_normal((3, 2)), np.zeros((3, 2)), np.ones(2)
        a.update(errors, spread, scale)
        b.update(errors, spread, scale)
        for level in (0.5, 0.9):
            assert np.array_equal(
                a.half_width(level, spread, 5, scale), b.half_width(level, spread, 5, scale)
            )


def test_few_scores_give_a_gaussian_interval_that_follows_them():
    cal = ConformalCalibrator(horizon=1, n_channels=1, window=100, min_samples=20)
    for _ in range(10):
        cal.update(np.array([[0.01]]), np.zeros((1, 1)), ONE)
    few = cal.half_width(0.9, np.zeros((1, 1)), 1, ONE)[0, 0]
    # The random-walk prior (one pseudo-score, about 1.48 local scales) is outweighed.
    assert 0.01 < few < 0.9


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


def test_model_coverage_is_near_nominal_under_exponential_growth():
    """The issue's case: intervals used to lag the growing scale (68% at 90%)."""
    rng = np.random.default_rng(3)
    t = np.arange(3000)
    y = np.exp(t / 800.0) * (5 + np.sin(2 * np.pi * t / 24) + 0.3 * rng.standard_normal(t.size))
    model = EpisodicKoopman(memory=None, level=0.9)
    model.learn_many(y)
    assert model.coverage == pytest.approx(0.9, abs=0.04)


def test_local_scale_followed_equals_a_new_median():
    """The rolling local scale gives `local_scale`'s floats, however rows arrive."""
    from episodic_koopman.embedding import History
    from episodic_koopman.local_scale import LocalScale, local_scale

    rng = np.random.default_rng(5)
    history = History(length=40, n_channels=2, margin=7)
    tracker = LocalScale(span=25)
    running = np.array([1.0, 2.0])
    for step in range(300):
        # Rounded values make ties, which the two middle changes must survive.
        history.append(np.round(rng.standard_normal(2) * 3, 1))
        if rng.random() < 0.3 or step < 5:
            k = min(26, history.count, history.length)
            expected = running.copy() if k < 2 else local_scale(history.last(k), running)
            np.testing.assert_array_equal(tracker.of(history, running), expected)


def test_local_scale_restarts_on_another_history():
    """A tracker handed another history (a reloaded model's) starts again from its rows."""
    from episodic_koopman.embedding import History
    from episodic_koopman.local_scale import LocalScale, local_scale

    rng = np.random.default_rng(6)
    first, second = History(length=30, n_channels=1), History(length=30, n_channels=1)
    for _ in range(50):
        first.append(rng.standard_normal(1))
        second.append(rng.standard_normal(1) * 10)
    tracker = LocalScale(span=20)
    tracker.of(first, ONE)
    np.testing.assert_array_equal(tracker.of(second, ONE), local_scale(second.last(21), ONE))


def test_a_vanishing_running_spread_does_not_blow_up_the_interval():
    # A recall whose weights sit on one episode has a spread near 0 (1e-39 was seen):
    # a running mean of such spreads made the next ordinary spread widen intervals 1e38-fold.
    cal = ConformalCalibrator(horizon=1, n_channels=1, window=100, min_samples=5)
    for e in [0.5, -1.0, 0.8, -0.3, 1.2, -0.7]:
        cal.update(np.array([[e]]), np.full((1, 1), 1e-39), ONE)
    plain = cal.half_width(0.8, np.zeros((1, 1)), 1, ONE)[0, 0]
    wide = cal.half_width(0.8, np.full((1, 1), 0.4), 1, ONE)[0, 0]
    assert plain < wide <= (1 + intervals._MAX_SPREAD_RATIO) * plain


def early_outage(n: int = 400, seed: int = 0) -> np.ndarray:
    """A daily cycle around 100 that drops to 24 for 27 steps just before the first fit."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    y = 100 + np.sin(2 * np.pi * t / 24) + 0.3 * rng.standard_normal(n)
    y[93:120] = 24.3
    return y


def noisy_cycle(n: int = 500, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 100 + 2 * np.sin(2 * np.pi * t / 24) + 0.3 * rng.standard_normal(n)


@pytest.mark.parametrize("stride", [1, 8, 24])
@pytest.mark.parametrize("series", [early_outage, noisy_cycle])
def test_early_intervals_stay_on_the_scale_of_the_data(series, stride: int) -> None:
    # Before the fixes, widths reached 1e4 to 1e36 times the data's range in the first few
    # hundred steps (a local AR's unclipped forecast across an outage, scored; or the
    # spread normalizer over a vanishing running spread), at every stride.
    y = series()
    data_range = float(y.max() - y.min())
    model = EpisodicKoopman(config=ModelConfig(stride=stride))
    widest = 0.0
    for i, v in enumerate(y):
        model.learn_one(float(v))
        if i % 2:
            f = model.predict(24, level=0.95)
            widest = max(widest, float((f.upper - f.lower).max()))
            assert np.abs(f.mean - y.mean()).max() < 10 * data_range
    assert widest < 1000 * data_range


def short_seasonal_series(seed: int) -> np.ndarray:
    """160 months of a trending yearly cycle: shorter than the default window, so the
    operator never fits and only 16 or so scored forecasts complete (airline's case)."""
    rng = np.random.default_rng(seed)
    t = np.arange(160)
    return 100 + 0.5 * t + 10 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 2, t.size)


def test_a_short_series_gets_intervals_from_its_graded_forecasts():
    # With too few scored forecasts for a quantile, the interval was a Gaussian whose
    # scale was pulled up by a random-walk prior and the worst (youngest) forecasts: its
    # 50% interval held 0.91 of the outcomes here. The newest forecasts graded between
    # scored ticks give a conformal quantile instead.
    held = []
    for seed in range(4):
        y = short_seasonal_series(seed)
        model = EpisodicKoopman()
        for i, v in enumerate(y):
            model.learn_one(float(v))
            if 96 <= i < y.size - 12:
                f = model.predict(12, level=0.5)
                outcome = y[i + 1 : i + 13]
                held.append(((outcome >= f.lower.ravel()) & (outcome <= f.upper.ravel())).mean())
    assert 0.4 < float(np.mean(held)) < 0.7


def test_graded_only_scores_are_kept_apart_and_dropped_once_scores_are_enough():
    cal = ConformalCalibrator(horizon=1, n_channels=1, window=100, min_samples=20)
    spread = np.zeros((1, 1))
    for e in np.arange(1.0, 41.0):  # 40 graded-only scores: the newest 30 are 11..40
        cal.update(np.array([[e]]), spread, ONE, graded_only=True)
    assert cal.n_samples == 0 and cal.n_early_samples == intervals._EARLY_WINDOW
    # Rank (30 + 1) * 0.5 = 15.5 of 11..40: 25.5.
    assert cal.half_width(0.5, spread, 1, ONE)[0, 0] == pytest.approx(25.5)
    for _ in range(20):
        cal.update(np.array([[1.0]]), spread, ONE)
    assert cal.n_early_samples == 0 and cal.get_state()["early_scores"].size == 0
    assert cal.half_width(0.5, spread, 1, ONE)[0, 0] == pytest.approx(1.0)


def test_early_grading_state_round_trips_mid_flight():
    from episodic_koopman.persistence import model_from_bytes, model_to_bytes

    y = short_seasonal_series(0)
    model = EpisodicKoopman()
    model.learn_many(y[:100])  # graded-only forecasts pending, and graded ones held
    assert model._pipeline is not None and model._pipeline.calibrator.n_early_samples > 0
    loaded = model_from_bytes(model_to_bytes(model))
    assert model_to_bytes(loaded) == model_to_bytes(model)
    for v in y[100:]:
        model.learn_one(float(v))
        loaded.learn_one(float(v))
        a, b = model.predict(12, level=0.8), loaded.predict(12, level=0.8)
        assert np.array_equal(a.lower, b.lower) and np.array_equal(a.upper, b.upper)


def test_without_early_grading_a_short_series_keeps_the_gaussian_interval():
    y = short_seasonal_series(1)
    on = EpisodicKoopman()
    off = EpisodicKoopman(config=ModelConfig(early_grading=False))
    on.learn_many(y)
    off.learn_many(y)
    f_on, f_off = on.predict(12, level=0.5), off.predict(12, level=0.5)
    assert np.array_equal(f_on.mean, f_off.mean)  # the intervals alone
    assert off._pipeline is not None and off._pipeline.calibrator.n_early_samples == 0
    assert float((f_off.upper - f_off.lower).mean()) > float((f_on.upper - f_on.lower).mean())


def test_a_state_saved_before_early_grading_loads_with_none():
    cal = ConformalCalibrator(horizon=1, n_channels=1, window=100, min_samples=20)
    for e in range(5):
        cal.update(np.array([[float(e)]]), np.zeros((1, 1)), ONE, graded_only=True)
    state = cal.get_state()
    del state["early_scores"], state["early_count"]
    cal.set_state(state)
    assert cal.n_early_samples == 0


def test_one_cell_keeps_the_newest_scores_in_arrival_order():
    """With one step ahead and one channel, reading the quantile must not reorder the ring
    (it used to sort it in place, so the wrong score left next)."""
    cal = ConformalCalibrator(horizon=1, n_channels=1, window=3, min_samples=1)
    for e in (3.0, 1.0, 2.0, 10.0):
        cal.half_width(0.9, np.zeros((1, 1)), 1, ONE)
        cal.update(np.array([[e]]), np.zeros((1, 1)), ONE)
    # The oldest (3.0) left: slot 0 holds the newest.
    assert cal.get_state()["scores"].ravel().tolist() == [10.0, 1.0, 2.0]
