"""Known answers of the Theta expert (`episodic_koopman.theta`), and its saved state."""

import numpy as np
import pytest

from episodic_koopman import EpisodicKoopman, ModelConfig
from episodic_koopman.embedding import History
from episodic_koopman.experts import ExpertBank
from episodic_koopman.theta import Theta

BLOCK = 8


def feed(expert: Theta, values: np.ndarray, block: int = BLOCK) -> History:
    """Learn ``values (T,)`` or ``(T, c)`` as a model would: history, then the boundary."""
    values = values.reshape(len(values), -1)
    history = History(length=max(64, len(values)), n_channels=values.shape[1])
    for n, row in enumerate(values, start=1):
        history.append(row)
        if n % block == 0:
            expert.advance(history, n)
    return history


def batch_theta(values: np.ndarray, alpha: float, steps: int) -> np.ndarray:
    """The textbook Theta method, written out: the mean of the least-squares line carried
    on and SES (started at the first value) of the theta-2 line ``2 y - line``."""
    t = np.arange(len(values), dtype=float)
    slope, intercept = np.polyfit(t, values, 1)
    line = intercept + slope * t
    level = None
    for z in 2 * values - line:
        level = z if level is None else alpha * z + (1 - alpha) * level
    ahead = intercept + slope * np.arange(len(values), len(values) + steps)
    return 0.5 * ahead + 0.5 * level


@pytest.mark.parametrize("n", [64, 67])  # at a block boundary, and between two
def test_the_whole_slope_is_exact_on_a_line(n):
    values = 40.0 - 0.75 * np.arange(n)
    expert = Theta("theta", BLOCK, alphas=(0.3,), weights=(1.0,))
    history = feed(expert, values)
    expected = 40.0 - 0.75 * np.arange(n, n + 12)
    assert np.allclose(expert.forecast(history, n, 12)[:, 0], expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("weights", [(0.5,), (0.5, 0.75, 1.0)])
def test_a_constant_stays_constant(weights):
    expert = Theta("theta", BLOCK, alphas=(0.1, 0.5, 1.0), weights=weights)
    history = feed(expert, np.full(100, 7.25))
    assert np.array_equal(expert.forecast(history, 100, 24)[:, 0], np.full(24, 7.25))


@pytest.mark.parametrize("alpha", [0.2, 0.6])
def test_the_standard_theta_is_the_mean_of_the_two_theta_lines(alpha):
    rng = np.random.default_rng(3)
    values = 5.0 + 0.4 * np.arange(120) + rng.standard_normal(120)
    expert = Theta("theta", BLOCK, alphas=(alpha,), weights=(0.5,))
    history = feed(expert, values)
    assert np.allclose(
        expert.forecast(history, 120, 10)[:, 0], batch_theta(values, alpha, 10), atol=1e-9
    )


def test_it_chooses_the_candidate_of_least_block_error():
    # A line: only the whole slope is right, whatever the smoothing constant; the
    # standard theta (first in the grid) forecasts until a block has been scored.
    values = 2.0 + 0.5 * np.arange(80)
    expert = Theta("theta", BLOCK, alphas=(0.5,), weights=(0.5, 1.0))
    history = feed(expert, values[:8])
    assert not np.allclose(expert.forecast(history, 8, 4)[:, 0], values[8:12])
    history = feed(expert, values[:80])  # a fresh history, the same expert: blocks 2..10
    assert np.allclose(expert.forecast(history, 80, 4)[:, 0], 2.0 + 0.5 * np.arange(80, 84))


def test_channels_are_forecast_on_their_own():
    t = np.arange(96.0)
    both = np.stack([3.0 + 0.25 * t, np.full(96, -1.5)], axis=1)
    expert = Theta("theta", BLOCK, alphas=(0.4,), weights=(1.0,))
    history = feed(expert, both)
    path = expert.forecast(history, 96, 5)
    assert np.allclose(path[:, 0], 3.0 + 0.25 * np.arange(96, 101), atol=1e-9)
    assert np.array_equal(path[:, 1], np.full(5, -1.5))


def test_the_seasonal_theta_is_exact_on_a_season_on_a_line():
    # Additive season on a line: the classical indices are exact (the centred moving
    # average of a line plus a zero-mean season is the line), the adjusted series is a line.
    pattern = np.array([3.0, -1.0, 4.0, 1.0, -5.0, 9.0, 2.0, 0.5, -2.0, 6.0, 1.0, -3.0])
    pattern -= pattern.mean()
    t = np.arange(250)
    values = 100.0 + 0.7 * t + pattern[t % 12]
    expert = Theta("theta_seasonal", BLOCK, (0.3,), (1.0,), periods_of=lambda: [12], span=200)
    history = feed(expert, values[:200])
    assert expert.period == 12
    assert np.allclose(expert.forecast(history, 200, 30)[:, 0], values[200:230], atol=1e-8)


def test_the_seasonal_theta_adjusts_only_once_a_period_is_found():
    periods: list[int] = []
    values = 10.0 + np.sin(2 * np.pi * np.arange(200) / 10)
    expert = Theta("theta_seasonal", BLOCK, (0.5,), periods_of=lambda: periods, span=160)
    history = feed(expert, values[:96])
    assert expert.period is None and expert.season is not None and not expert.season.any()
    periods.append(9)  # found (a lag off): rebuilt at the period nearby that explains it
    expert.advance(history, 96)
    assert expert.period == 10 and expert.seen == 96
    assert np.allclose(expert.forecast(history, 96, 20)[:, 0], values[96:116], atol=0.05)


def test_a_period_found_a_few_lags_off_is_taken_at_the_one_that_explains_it():
    rng = np.random.default_rng(7)
    t = np.arange(480)
    values = 20.0 + 3.0 * np.sin(2 * np.pi * t / 24) + rng.standard_normal(t.size)
    expert = Theta("theta_seasonal", BLOCK, (0.3,), periods_of=lambda: [22], span=480)
    feed(expert, values)
    assert expert.found == (22,) and expert.chosen == expert.period == 24


def test_a_period_that_explains_little_is_not_adjusted_by():
    noise = 5.0 + np.random.default_rng(8).standard_normal(400)
    expert = Theta("theta_seasonal", BLOCK, (0.3,), periods_of=lambda: [17], span=400)
    history = feed(expert, noise)
    assert expert.chosen is None and expert.period is None
    plain = Theta("theta", BLOCK, (0.3,))
    feed(plain, noise)
    assert np.array_equal(expert.forecast(history, 400, 5), plain.forecast(history, 400, 5))


def test_the_period_in_use_is_kept_while_none_is_detected():
    t = np.arange(400)
    values = 10.0 + np.sin(2 * np.pi * t / 12) + 0.01 * np.cos(t)
    periods = [12]
    expert = Theta("theta_seasonal", BLOCK, (0.3,), periods_of=lambda: periods, span=300)
    history = feed(expert, values[:200])
    periods.clear()  # the detector loses it: the season still explains the rows
    for n in range(201, 401):
        history.append(np.array([values[n - 1]]))
        if n % BLOCK == 0:
            expert.advance(history, n)
    assert expert.period == 12


def test_a_positive_season_of_ratios_on_a_level_is_forecast_exactly():
    ratios = np.array([0.8, 1.1, 1.3, 0.9, 1.0, 0.7, 1.2, 1.0])
    ratios /= ratios.mean()
    values = 50.0 * ratios[np.arange(160) % 8]
    expert = Theta("theta_seasonal", BLOCK, (0.3, 0.9), periods_of=lambda: [8], span=160,
                   multiplicative=True)  # fmt: skip
    history = feed(expert, values[:120])
    assert expert.ratio and expert.period == 8
    assert np.allclose(expert.forecast(history, 120, 20)[:, 0], values[120:140], atol=1e-9)


@pytest.mark.parametrize("n", [203, 208])
def test_states_round_trip_exactly(n):
    rng = np.random.default_rng(0)
    walk = np.cumsum(rng.standard_normal(n))
    values = 50.0 + 0.3 * walk + 4.0 * np.sin(2 * np.pi * np.arange(n) / 9)

    def make() -> Theta:
        return Theta(
            "theta_seasonal", BLOCK, (0.2, 0.7), (0.5, 1.0), 0.99, 0.9, lambda: [9], 100, True
        )

    expert = make()
    history = feed(expert, values)
    assert expert.period == 9 and expert.ratio
    meta, arrays = expert.get_state()
    assert meta["version"] == 1 and set(arrays) == {
        "sums",
        "level",
        "lag",
        "loss",
        "season",
        "scale",
    }
    copy = make()
    copy.set_state(meta, arrays)
    assert np.array_equal(copy.forecast(history, n, 30), expert.forecast(history, n, 30))
    empty = make()
    empty.set_state(*make().get_state())
    assert empty.forecast(history, n, 3) is None


def test_a_state_of_another_layout_is_refused():
    expert = Theta("theta", BLOCK, (0.5,))
    with pytest.raises(ValueError, match="version"):
        expert.set_state({"version": 99, "seen": 0, "period": None}, {})


@pytest.mark.parametrize(
    ("alphas", "weights", "forgetting"),
    [((), (0.5,), 1.0), ((0.0,), (0.5,), 1.0), ((1.5,), (0.5,), 1.0), ((0.5,), (), 1.0),
     ((0.5,), (0.5,), 0.0)],
)  # fmt: skip
def test_bad_settings_are_refused(alphas, weights, forgetting):
    with pytest.raises(ValueError):
        Theta("theta", BLOCK, alphas, weights, forgetting)


def test_the_bank_names_its_theta_experts():
    bank = ExpertBank(["last", "theta", "theta_opt", "theta_seasonal"], BLOCK)
    assert bank.names == ["last", "theta", "theta_opt", "theta_seasonal"]
    assert "periods" in bank.components() and "expert_theta_seasonal" in bank.components()


def test_a_model_with_theta_experts_weighs_them():
    t = np.arange(600.0)
    values = 20.0 + 0.05 * t + np.sin(2 * np.pi * t / 24)
    experts = "last,seasonal,damped,ar,seasonal_ar,theta,theta_seasonal"
    model = EpisodicKoopman(memory=None, config=ModelConfig(classical_experts=experts))
    model.learn_many(values)
    weights = model.expert_weights()
    assert weights is not None and {"theta", "theta_seasonal"} <= set(weights)
    assert np.all(np.isfinite(model.forecast(24)))
