"""Koopman experts at other delay embeddings (``koopman<delays>``): known answers and purity."""

import numpy as np
import pytest
from helpers import assert_same_state, noisy_sines, state_fingerprint

from episodic_koopman import EpisodicKoopman
from episodic_koopman.embedding import History
from episodic_koopman.koopman_expert import KoopmanExpert

BLOCK = 8
WITH_EXPERTS = "last,seasonal,damped,ar,koopman16,koopman48"


def history_of(values: np.ndarray) -> History:
    history = History(length=600, n_channels=1)
    for value in values:
        history.append(np.array([value]))
    return history


@pytest.mark.parametrize("n", [160, 163])  # at a block boundary, and between two
def test_a_pure_season_is_forecast_exactly(n):
    t = np.arange(n + 30, dtype=np.float64)
    values = 4.0 + 2.0 * np.sin(2 * np.pi * t / 12) + np.cos(2 * np.pi * t / 5)
    expert = KoopmanExpert("koopman16", delays=16, block=BLOCK)
    path = expert.forecast(history_of(values[:n]), n, 30)
    assert path is not None
    assert np.allclose(path[:, 0], values[n:], atol=1e-6)


def test_it_abstains_until_its_window_holds_two_pairs_per_lag():
    expert = KoopmanExpert("koopman16", delays=16, block=BLOCK)
    values = np.sin(np.arange(60.0) / 3)
    assert expert.forecast(history_of(values[:47]), 47, 5) is None  # boundary 40 < 3 x 16
    assert expert.forecast(history_of(values[:48]), 48, 5) is not None


def test_a_forecast_depends_on_the_history_alone():
    """The cached fit of a block leaves no trace: a fresh expert forecasts the same."""
    values = noisy_sines(300, seed=3)
    warm = KoopmanExpert("koopman24", delays=24, block=BLOCK)
    for n in (200, 203, 208, 300):
        history = history_of(values[:n])
        cold = KoopmanExpert("koopman24", delays=24, block=BLOCK)
        assert np.array_equal(warm.forecast(history, n, 12), cold.forecast(history, n, 12))


def test_the_model_weighs_them_and_stays_pure(tmp_path):
    values = noisy_sines(500, seed=8) * 3 + 10
    model = EpisodicKoopman.from_flat(
        {"delays": 12, "window": 64, "classical_experts": WITH_EXPERTS}
    )
    model.learn_many(values[:350])
    weights = model.expert_weights()
    assert weights is not None and {"koopman16", "koopman48"} <= set(weights)
    path = tmp_path / "m.ekm"
    model.save(path)
    loaded = EpisodicKoopman.load(path)
    assert model.forecast(24) == loaded.forecast(24)
    chunked = EpisodicKoopman.from_flat(
        {"delays": 12, "window": 64, "classical_experts": WITH_EXPERTS}
    )
    for chunk in np.split(values, [7, 100, 101, 350, 420]):
        chunked.learn_many(chunk)
        chunked.forecast(5)
    model.learn_many(values[350:])
    loaded.learn_many(values[350:])
    assert_same_state(state_fingerprint(model), state_fingerprint(chunked))
    assert model.forecast(24) == loaded.forecast(24) == chunked.forecast(24)


def test_unknown_scales_are_rejected():
    with pytest.raises(ValueError, match="classical_experts"):
        EpisodicKoopman.from_flat({"classical_experts": "koopman7"})
