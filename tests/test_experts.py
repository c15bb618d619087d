"""Known answers of the classical experts, the period finder and the mixture's regret."""

import numpy as np
import pytest

from episodic_koopman import EpisodicKoopman
from episodic_koopman.autoregressive import LocalAR, SeasonalAR
from episodic_koopman.embedding import History
from episodic_koopman.experts import DampedTrend, ExpertBank, LastValue, SeasonalNaive
from episodic_koopman.mixture import LOSS_CAP, PRIOR_FORECASTS, ExpertMixture
from episodic_koopman.periods import PeriodFinder, dominant_periods

BLOCK = 8


def feed(expert, values: np.ndarray, block: int = BLOCK, finder=None) -> History:
    """Learn ``values`` as a model would: history first, then the block boundary."""
    history = History(length=max(64, len(values)), n_channels=1)
    for n, value in enumerate(values, start=1):
        history.append(np.array([value]))
        if n % block == 0:
            if finder is not None:
                finder.advance(history, n)
            expert.advance(history, n)
    return history


def test_last_value_is_exact_on_a_constant():
    values = np.full(40, 3.25)
    history = feed(LastValue(), values)
    assert np.array_equal(LastValue().forecast(history, 40, 5)[:, 0], np.full(5, 3.25))


@pytest.mark.parametrize("n", [64, 67])  # at a block boundary, and between two
def test_damped_trend_is_exact_on_a_linear_trend(n):
    values = 5.0 - 0.75 * np.arange(n)
    expert = DampedTrend(BLOCK, alpha=0.5, beta=0.3, phi=1.0)
    history = feed(expert, values)
    expected = 5.0 - 0.75 * np.arange(n, n + 10)
    assert np.allclose(expert.forecast(history, n, 10)[:, 0], expected, atol=1e-9)


def test_damped_trend_damps_the_trend():
    values = 0.5 * np.arange(200.0)
    expert = DampedTrend(BLOCK, alpha=0.5, beta=0.1, phi=0.9)
    history = feed(expert, values)
    path = expert.forecast(history, 200, 50)[:, 0]
    steps = np.diff(path)
    assert np.all(steps > 0) and np.all(np.diff(steps) < 0)  # rising, ever more slowly
    assert path[-1] < values[-1] + 0.5 * 0.9 / 0.1 + 1.0  # bounded by the damped sum


def test_seasonal_naive_is_exact_on_a_pure_season_of_a_detected_period():
    t = np.arange(240)
    pattern = np.array([0.0, 2.0, 5.0, 1.0, -3.0, 4.0, 0.5, -1.0, 2.5, 3.0, -2.0, 1.5])
    values = pattern[t % 12]
    finder = PeriodFinder(slots=1, every=BLOCK, window=240)
    expert = SeasonalNaive("seasonal1", lambda: finder.period(0))
    history = feed(expert, values, finder=finder)
    assert finder.periods == [12]
    assert np.array_equal(
        expert.forecast(history, 240, 30)[:, 0], pattern[np.arange(240, 270) % 12]
    )


def test_seasonal_naive_with_drift_is_exact_on_a_season_plus_a_trend():
    pattern = np.array([3.0, -1.0, 4.0, 1.0, -5.0, 9.0, 2.0])
    t = np.arange(200)
    values = pattern[t % 7] + 0.3 * t
    expert = SeasonalNaive("seasonal_drift1", lambda: 7, drift=True)
    history = feed(expert, values)
    ahead = np.arange(200, 225)
    expected = pattern[ahead % 7] + 0.3 * ahead
    assert np.allclose(expert.forecast(history, 200, 25)[:, 0], expected, atol=1e-9)


def test_local_ar_is_exact_on_an_ar2_process():
    # y_t = 0.3 + 1.5 y_{t-1} - 0.8 y_{t-2}: a damped oscillation around 1.0
    y = [4.0, -2.0]
    for _ in range(198):
        y.append(0.3 + 1.5 * y[-1] - 0.8 * y[-2])
    expert = LocalAR(BLOCK, order=2, forgetting=0.995)
    history = feed(expert, np.array(y[:160]))
    assert expert.coef is not None
    assert np.allclose(expert.coef[0, 1:], [1.5, -0.8], atol=1e-6)
    assert np.allclose(expert.forecast(history, 160, 40)[:, 0], y[160:200], atol=1e-6)


@pytest.mark.parametrize("n", [120, 125])  # at a block boundary, and between two
def test_seasonal_ar_is_exact_on_a_season_plus_a_trend(n):
    pattern = np.array([3.0, -1.0, 4.0, 1.0, -5.0, 9.0, 2.0, 0.5, -2.0, 6.0, 1.0, -3.0])
    t = np.arange(n + 30)
    values = 100.0 + 0.7 * t + pattern[t % 12]
    expert = SeasonalAR("seasonal_ar1", lambda: 12, BLOCK, order=2, forgetting=0.995)
    history = feed(expert, values[:n])
    assert np.allclose(expert.forecast(history, n, 30)[:, 0], values[n:], atol=1e-6)


def test_seasonal_ar_is_exact_when_the_seasonal_changes_follow_an_ar2():
    # y_t = y_{t-12} + z_t, z_t = 0.5 + 1.2 z_{t-1} - 0.5 z_{t-2}: a season whose change from
    # one year to the next oscillates towards a steady drift of 1.67 a year.
    pattern = np.array([3.0, -1.0, 4.0, 1.0, -5.0, 9.0, 2.0, 0.5, -2.0, 6.0, 1.0, -3.0])
    z = [2.0, -1.0]
    for _ in range(198):
        z.append(0.5 + 1.2 * z[-1] - 0.5 * z[-2])
    y = list(pattern)
    for k in range(200):
        y.append(y[-12] + z[k])
    values = np.array(y)
    expert = SeasonalAR("seasonal_ar1", lambda: 12, BLOCK, order=2, forgetting=0.995)
    history = feed(expert, values[:160])
    assert expert.coef is not None
    assert np.allclose(expert.coef[0, 1:], [1.2, -0.5], atol=1e-6)
    assert np.allclose(expert.forecast(history, 160, 40)[:, 0], values[160:200], atol=1e-5)


def test_seasonal_ar_follows_the_period_and_is_ready_once_one_is_found():
    period: list[int | None] = [None]
    expert = SeasonalAR("seasonal_ar1", lambda: period[0], BLOCK, order=2, forgetting=0.995)
    pattern = np.array([1.0, 5.0, -2.0, 0.0, 3.0, 4.0, -1.0])
    t = np.arange(200)
    values = pattern[t % 7] + 0.25 * t
    history = feed(expert, values[:96])
    assert expert.forecast(history, 96, 5) is None  # no period: abstains
    period[0] = 7  # found: the whole history is absorbed at the next boundary
    expert.advance(history, 96)
    assert np.allclose(expert.forecast(history, 96, 20)[:, 0], values[96:116], atol=1e-6)
    period[0] = 14  # a multiple is right too, from a rebuild at the new period
    expert.advance(history, 96)
    assert expert.period == 14
    assert np.allclose(expert.forecast(history, 96, 20)[:, 0], values[96:116], atol=1e-6)


def test_seasonal_ar_rebuilds_keep_no_per_rebuild_buffers():
    """A period that keeps changing rebuilds from the whole history each time; those
    one-off layouts are not kept (they grew a model by 1.2 MiB on bike sharing)."""
    period = [7]
    expert = SeasonalAR("seasonal_ar2", lambda: period[0], BLOCK, order=2, forgetting=0.995)
    values = np.sin(np.arange(800) / 3.0)
    history = History(length=800, n_channels=1)
    for n, value in enumerate(values, start=1):
        history.append(np.array([value]))
        if n % BLOCK == 0:
            period[0] = 7 + (n // BLOCK) % 5  # a new period at every boundary
            expert.advance(history, n)
    assert all(k <= BLOCK for k in expert._lags)


def test_expert_states_round_trip_exactly():
    rng = np.random.default_rng(0)
    values = np.cumsum(rng.standard_normal(203))
    for make in (
        lambda: DampedTrend(BLOCK, 0.5, 0.1, 0.9),
        lambda: LocalAR(BLOCK, 4, 0.99),
        lambda: SeasonalAR("seasonal_ar1", lambda: 9, BLOCK, 3, 0.99),
        lambda: PeriodFinder(2, BLOCK, 200),
    ):
        expert = make()
        history = feed(expert, values)
        copy = make()
        copy.set_state(*expert.get_state())
        if isinstance(expert, PeriodFinder):
            assert copy.periods == expert.periods
        else:
            assert np.array_equal(
                copy.forecast(history, 203, 30), expert.forecast(history, 203, 30)
            )


@pytest.mark.parametrize(
    ("periods", "n", "expected"),
    [((12,), 144, [12]), ((24,), 600, [24]), ((24, 168), 600, [168, 24])],
)
def test_dominant_periods_finds_known_periods(periods, n, expected):
    t = np.arange(n, dtype=float)
    rng = np.random.default_rng(1)
    values = sum(np.sin(2 * np.pi * t / p) for p in periods) + 0.2 * rng.standard_normal(n)
    found = dominant_periods(values[:, None], slots=len(expected))
    assert sorted(found) == sorted(expected)


def test_detrending_finds_a_season_under_a_strong_trend():
    # Over a few periods a steep trend swamps the autocorrelation: its peaks show only
    # once the trend's line is removed.
    t = np.arange(48.0)
    rng = np.random.default_rng(0)
    values = 100.0 + 3.0 * t + 10.0 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 1, t.size)
    assert dominant_periods(values[:, None], 1) == []
    assert dominant_periods(values[:, None], 1, detrend=True) == [12]


def test_the_finder_looks_at_every_block_while_the_series_is_young():
    t = np.arange(200.0)
    values = 50.0 + np.sin(2 * np.pi * t / 12)
    young = PeriodFinder(1, every=8 * BLOCK, window=600, early=16 * BLOCK)
    late = PeriodFinder(1, every=8 * BLOCK, window=600)
    history = History(length=600, n_channels=1)
    found: dict[str, int] = {}
    for n, value in enumerate(values, start=1):
        history.append(np.array([value]))
        if n % BLOCK == 0:
            for name, finder in (("young", young), ("late", late)):
                finder.advance(history, n)
                if finder.periods and name not in found:
                    found[name] = n
    assert found == {"young": 40, "late": 64}  # the first boundary with three periods (36)


def test_dominant_periods_of_white_noise_is_empty():
    noise = np.random.default_rng(2).standard_normal((500, 1))
    assert dominant_periods(noise, slots=2) == []


def test_the_bank_abstains_until_its_experts_are_ready():
    bank = ExpertBank(["last", "seasonal", "seasonal_drift", "damped", "ar"], BLOCK)
    history = History(length=700, n_channels=1)
    history.append(np.array([1.0]))
    bank.advance(history, 1)
    tracks, available = bank.forecast(history, 1, 4)
    assert available.tolist() == [True] + [False] * 6
    assert np.array_equal(tracks[0, :, 0], np.ones(4)) and not tracks[1:].any()


# -- the aggregation rule ---------------------------------------------------------------


def run_mixture(
    predictions: np.ndarray, truth: np.ndarray, decay: float, rule: str = "boa"
) -> np.ndarray:
    """Mix expert ``predictions (T, E)`` of ``truth (T,)`` online; the mixture's forecasts."""
    n_experts = predictions.shape[1]
    mixture = ExpertMixture([f"e{i}" for i in range(n_experts)], 1, decay, 1.0, rule=rule)
    awake = np.ones(n_experts, dtype=bool)
    issued = np.empty(truth.size)
    for t, (f, y) in enumerate(zip(predictions, truth, strict=True)):
        w = mixture.weights(awake, 1)[:, 0]
        issued[t] = w @ f
        losses = np.abs(f - y)
        regrets = abs(issued[t] - y) - losses  # as the model's scorer gives them
        mixture.update(0, losses, awake, regrets)
    return issued


@pytest.mark.parametrize("rule", ["boa", "mlpoly"])
def test_regret_against_the_best_expert_grows_like_the_square_root(rule):
    # Three constant experts and a noisy truth around the second; then a fourth
    # expert that is right half the time and far off otherwise.
    rng = np.random.default_rng(4)
    t_max = 4000
    truth = 1.0 + 0.5 * rng.standard_normal(t_max)
    flip = np.where(rng.random(t_max) < 0.5, 1.0, -3.0)
    predictions = np.stack([np.zeros(t_max), np.ones(t_max), np.full(t_max, 2.0), flip], axis=1)
    issued = run_mixture(predictions, truth, decay=0.0, rule=rule)
    for horizon in (250, 1000, t_max):
        mixture_loss = np.abs(issued[:horizon] - truth[:horizon]).sum()
        best = np.abs(predictions[:horizon] - truth[:horizon, None]).sum(axis=0).min()
        # Both rules' bounds are of order sqrt(K (1 + sum of squared regret increments)),
        # and the increments are at most the experts' spread (4 here).
        assert mixture_loss - best <= np.sqrt(4 * (1 + 16 * horizon))
    assert (mixture_loss - best) / t_max < 0.02  # sublinear: the average regret vanishes


@pytest.mark.parametrize("rule", ["boa", "mlpoly"])
def test_the_mixture_beats_every_expert_when_their_errors_cancel(rule):
    # Two experts biased in opposite directions: their average is right.
    rng = np.random.default_rng(5)
    truth = rng.standard_normal(3000)
    predictions = np.stack([truth + 1.0, truth - 1.0], axis=1)
    issued = run_mixture(predictions, truth, decay=0.0, rule=rule)
    late = slice(1000, None)
    assert np.abs(issued[late] - truth[late]).mean() < 0.2  # each expert's error is 1.0


@pytest.mark.parametrize("rule", ["boa", "mlpoly"])
def test_with_forgetting_the_mixture_follows_a_switch_of_the_best_expert(rule):
    t_max = 2000
    truth = np.where(np.arange(t_max) < t_max // 2, 0.0, 1.0)
    predictions = np.stack([np.zeros(t_max), np.ones(t_max)], axis=1)
    issued = run_mixture(predictions, truth, decay=0.05, rule=rule)
    assert abs(issued[t_max // 2 - 1] - 0.0) < 0.01  # 99% of the weight on the best
    assert abs(issued[-1] - 1.0) < 0.01


@pytest.mark.parametrize("rule", ["boa", "mlpoly"])
def test_sleeping_experts_get_no_weight_and_keep_their_regret(rule):
    mixture = ExpertMixture(["a", "b", "c"], 1, 0.0, 1.0, rule=rule)
    mixture.update(0, np.zeros(3), np.array([True, True, True]), np.array([1.0, -1.0, 0.5]))
    awake = np.array([False, True, True])
    w = mixture.weights(awake, 1)[:, 0]
    assert w[0] == 0.0 and w[2] > w[1]
    mixture.update(0, np.zeros(3), awake, np.array([9.0, 0.5, -0.5]))
    assert mixture.get_state()["regret"][0, 0] == 1.0  # asleep: unchanged


def test_the_hedge_rule_truncates_each_error_at_the_loss_cap():
    # Known answer: decay 0.5, cap 2. Round 1 errors (0.5, 100 -> 2), round 2 (1.0, 0.1):
    # sums 0.5 * (0.5 * 0.5 + 0.5 * 1.0) and 0.5 * (0.5 * 2.0) + 0.5 * 0.1, mass 0.75.
    both = np.array([True, True])
    capped = ExpertMixture(["a", "b"], 1, 0.5, 4.0, loss_cap=2.0)
    raw = ExpertMixture(["a", "b"], 1, 0.5, 4.0, loss_cap=None)
    for mixture in (capped, raw):
        mixture.update(0, np.array([0.5, 100.0]), both)
        mixture.update(0, np.array([1.0, 0.1]), both)
    assert np.allclose(capped.losses()[:, 0], [0.625 / 0.75, 0.55 / 0.75], rtol=0, atol=1e-15)
    assert np.allclose(raw.losses()[:, 0], [0.625 / 0.75, 25.05 / 0.75], rtol=0, atol=1e-15)


def test_after_a_shock_that_every_expert_misses_the_weights_return_to_the_best():
    # An outage: both experts are off by tens of scale units for one round, the usually
    # better one by more. Truncated, the round is a tie and 10 rounds later the steady
    # expert has the weight back; untruncated, the shock still decides the weights.
    steady_shock, lucky_shock = 80.0, 60.0
    weights = {}
    for cap in (LOSS_CAP, None):
        mixture = ExpertMixture(["steady", "lucky"], 1, 0.05, 4.0, loss_cap=cap)
        both = np.array([True, True])
        for _ in range(60):
            mixture.update(0, np.array([0.1, 0.3]), both)
        mixture.update(0, np.array([steady_shock, lucky_shock]), both)
        for _ in range(10):
            mixture.update(0, np.array([0.1, 0.3]), both)
        weights[cap] = mixture.weights(both, 1)[:, 0]
    assert weights[LOSS_CAP][0] > 0.95
    assert weights[None][0] < 0.5


def _hedge(estimates: np.ndarray, eta: float) -> np.ndarray:
    """The hedge rule's weights of loss estimates ``(E,)``."""
    w = np.exp(-eta * (estimates / estimates.min() - 1.0))
    return w / w.sum()


def test_a_young_record_is_shrunk_towards_its_guess_from_the_step_before():
    # Known answer with decay 0.5 (a record of one score has mass 0.5, and the prior's
    # weight is PRIOR_FORECASTS * 0.5 * (1 - 0.5) = 1): experts a and b scored once at
    # both steps, c once at the first step only.
    assert PRIOR_FORECASTS == 4.0
    mixture = ExpertMixture(["a", "b", "c"], 2, 0.5, 4.0)
    mixture.update(0, np.array([0.2, 0.6, 0.0]), np.array([True, True, False]))
    mixture.update(1, np.array([0.4, 0.8, 0.0]), np.array([True, True, False]))
    mixture.update(0, np.array([0.0, 0.0, 0.1]), np.array([False, False, True]))
    w = mixture.weights(np.ones(3, dtype=bool), 2)
    # Step 1: the guess is the mean, 0.3; estimates (0.5 L + 0.3) / 1.5.
    first = np.array([0.4, 0.6, 0.35]) / 1.5
    assert np.allclose(w[:, 0], _hedge(first, 4.0), rtol=0, atol=1e-12)
    # Step 2: each guess is the step-1 estimate over its mean (0.3), times the mean
    # here (0.6); c, never scored there, gets its guess alone (not the mean, 0.6).
    guess = first / 0.3 * 0.6
    second = np.array([(0.2 + guess[0]) / 1.5, (0.4 + guess[1]) / 1.5, guess[2]])
    assert np.allclose(w[:, 1], _hedge(second, 4.0), rtol=0, atol=1e-12)
    assert second[2] < 0.6


def test_one_lucky_first_score_does_not_win_the_weight_but_a_record_does():
    both, all_three = np.array([True, True, False]), np.ones(3, dtype=bool)
    mixture = ExpertMixture(["steady", "worse", "new"], 1, 0.05, 4.0)
    for _ in range(100):
        mixture.update(0, np.array([0.1, 0.3, 0.0]), both)
    mixture.update(0, np.array([0.1, 0.3, 0.01]), all_three)
    assert mixture.weights(all_three, 1)[2, 0] < 0.5  # one score: ten times better
    for _ in range(9):
        mixture.update(0, np.array([0.1, 0.3, 0.01]), all_three)
    assert mixture.weights(all_three, 1)[2, 0] > 0.99  # ten: it has earned the weight


def test_a_full_record_is_weighed_by_its_own_losses_alone():
    # Once the record's mass is 1 (to 1e-9), the prior is dropped: exactly the hedge
    # rule on the experts' loss averages.
    mixture = ExpertMixture(["a", "b"], 1, 0.05, 4.0)
    rng = np.random.default_rng(3)
    for _ in range(1000):
        mixture.update(0, rng.uniform(0.1, 0.5, size=2), np.ones(2, dtype=bool))
    assert np.all(mixture.get_state()["mass"] > 1.0 - 1e-10)
    w = mixture.weights(np.ones(2, dtype=bool), 1)[:, 0]
    losses = mixture.losses()[:, 0]
    logits = -4.0 * (losses / losses.min() - 1.0)
    expected = np.exp(logits - logits.max())
    assert np.array_equal(w, expected / expected.sum())


@pytest.mark.parametrize("cap", [0.0, -1.0, float("nan")])
def test_the_loss_cap_must_be_positive(cap):
    with pytest.raises(ValueError, match="loss_cap"):
        ExpertMixture(["a", "b"], 1, 0.05, 4.0, loss_cap=cap)


# -- in the model -------------------------------------------------------------------------


def test_the_model_weighs_the_classical_experts():
    t = np.arange(800.0)
    values = np.sin(2 * np.pi * t / 24) + 0.05 * np.random.default_rng(6).standard_normal(t.size)
    model = EpisodicKoopman(memory=None)
    model.learn_many(values)
    weights = model.expert_weights()
    assert weights is not None
    assert list(weights) == [
        "plain",
        "last",
        "seasonal1",
        "seasonal2",
        "damped",
        "ar",
        "seasonal_ar1",
        "seasonal_ar2",
        "theta_seasonal",
    ]
    assert all(abs(sum(w[h] for w in weights.values()) - 1.0) < 1e-12 for h in range(24))


def test_without_classical_experts_and_memory_the_forecast_is_the_plain_one():
    t = np.arange(500.0)
    bare = EpisodicKoopman.from_flat(
        {"delays": 12, "window": 64, "memory": False, "classical_experts": ""}
    )
    bare.learn_many(np.sin(2 * np.pi * t / 25))
    assert bare.expert_weights() is None
    assert np.allclose(bare.forecast(5), bare.reference_forecast(5)[:, 0], atol=1e-8)
