"""The automatic embedding (``delays=None``): early fits, known periods, purity across its ticks."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_same_state, noisy_sines, state_fingerprint

from episodic_koopman import EpisodicKoopman
from episodic_koopman.auto_embedding import STAGES, final_delays, next_tick, stage_delays
from episodic_koopman.cli.params import parse_params

TICKS = [t for t in (next_tick(d) for d in STAGES) if t is not None]  # 48, 96


def season(n: int, period: int, seed: int = 0) -> np.ndarray:
    """A pure season of ``period`` with a little noise, on a level."""
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64)
    return 10.0 + 3.0 * np.sin(2 * np.pi * t / period) + 0.02 * rng.standard_normal(n)


def test_the_schedule_grows_at_fixed_counts_and_stops_at_the_last_stage():
    assert [stage_delays(n) for n in (1, 23, 47, 48, 95, 96, 5000)] == [8, 8, 8, 16, 16, 32, 32]
    assert TICKS == [48, 96] and next_tick(final_delays()) is None
    model = EpisodicKoopman()
    assert model.delays is None and model.min_observations == 3 * STAGES[0]
    seen = []
    for k, value in enumerate(season(120, 12)):
        model.learn_one(float(value))
        seen.append((k + 1, model.current_delays, model.is_fitted))
    assert seen[22] == (23, 8, False) and seen[23] == (24, 8, True)
    assert seen[46][1] == 8 and seen[47][1] == 16 and seen[94][1] == 16 and seen[95][1] == 32


@pytest.mark.parametrize("period, n", [(12, 60), (24, 150)])
def test_a_known_period_is_forecast_early(period, n):
    """A 60-point monthly-like series has a fit after 24 points; the season is forecast well."""
    values = season(n + period, period)
    auto, fixed = EpisodicKoopman(), EpisodicKoopman(delays=32)
    auto.learn_many(values[:n])
    fixed.learn_many(values[:n])
    assert auto.is_fitted
    truth = values[n:]
    error = float(np.mean(np.abs(np.array(auto.forecast(period)) - truth)))
    assert error < 0.15  # the season's amplitude is 3
    spectrum = auto.spectrum()
    assert spectrum is not None
    periods = [row["period"] for row in spectrum.summary() if row["period"] is not None]
    assert any(abs(p - period) < 0.5 for p in periods)
    if n < 96:  # the fixed default has no fit yet
        assert not fixed.is_fitted


@pytest.mark.parametrize("n", [30, 60, 130])
@pytest.mark.parametrize("memory", [True, False])
def test_the_auto_model_is_the_fixed_model_of_its_current_delays(n, memory):
    """After a tick the history is replayed: the model equals the one with those delays fixed."""
    values = noisy_sines(n, seed=2) * 3 + 10
    auto = EpisodicKoopman.from_flat({"memory": memory})
    auto.learn_many(values)
    fixed = EpisodicKoopman.from_flat({"memory": memory, "delays": auto.current_delays})
    fixed.learn_many(values)
    a, b = auto.predict(30), fixed.predict(30)
    for name in ("mean", "lower", "upper"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert auto.memory_size == fixed.memory_size
    assert auto.expert_weights() == fixed.expert_weights()


def test_chunkings_across_the_ticks_give_the_same_state():
    values = noisy_sines(140, seed=4) * 2 + 5
    one = EpisodicKoopman()
    for value in values:
        one.learn_one(float(value))
    reference = state_fingerprint(one)
    for cuts in ([47, 48, 49, 96], [10, 95, 97], [48, 96], [1, 2, 139]):
        model = EpisodicKoopman()
        for chunk in np.split(values, cuts):
            model.learn_many(chunk)
            model.forecast(3)  # reads in between change nothing
        assert_same_state(reference, state_fingerprint(model))
        assert model.forecast(24) == one.forecast(24)


@pytest.mark.parametrize("saved_at", [20, 40, 48, 60, 100])
def test_save_load_across_a_tick_continues_identically(saved_at, tmp_path):
    values = noisy_sines(160, seed=6) * 3 + 10
    model = EpisodicKoopman()
    model.learn_many(values[:saved_at])
    path = tmp_path / "auto.ekm"
    model.save(path)
    loaded = EpisodicKoopman.load(path)
    assert loaded.delays is None and loaded.current_delays == model.current_delays
    assert_same_state(state_fingerprint(model), state_fingerprint(loaded))
    for chunk in np.split(values[saved_at:], [5, 50]):
        model.learn_many(chunk)
        loaded.learn_many(chunk)
    assert loaded.current_delays == model.current_delays == final_delays()
    assert_same_state(state_fingerprint(model), state_fingerprint(loaded))
    assert model.forecast(30) == loaded.forecast(30)


def test_multichannel_grows_too():
    t = np.arange(110, dtype=np.float64)
    data = {"a": np.sin(2 * np.pi * t / 12), "b": np.cos(2 * np.pi * t / 12)}
    model = EpisodicKoopman()
    model.learn_many({k: v[:50] for k, v in data.items()})
    assert model.current_delays == 16 and model.is_fitted
    model.learn_many({k: v[50:] for k, v in data.items()})
    fixed = EpisodicKoopman(delays=32)
    fixed.learn_many(data)
    assert model.forecast(12) == fixed.forecast(12)


def test_a_shared_memory_fixes_the_last_stage():
    """Growing replays episodes, which a shared memory cannot take back: no growth there."""
    first = EpisodicKoopman()
    shared = first.new_memory()
    assert shared.dim == EpisodicKoopman(delays=final_delays()).new_memory().dim
    models = [EpisodicKoopman(), EpisodicKoopman()]
    for source, model in enumerate(models):
        model.attach_memory(shared, source=source)
        assert model.current_delays == final_delays()
        assert model.min_observations == 3 * final_delays()
    for model in models:
        model.learn_many(noisy_sines(200, seed=1))
    assert all(m.current_delays == final_delays() for m in models) and len(shared) > 0


def test_a_history_too_short_to_replay_keeps_the_first_stage(tmp_path):
    # A fixed stride of 8: the history holds window + delays + 8 = 32 < 48 rows (a stride
    # that may grow to 32 sizes it for 32, and 56 rows can replay).
    params = {"window": 16, "memory": False, "classical_experts": "", "stride_doublings": 0}
    model = EpisodicKoopman.from_flat(params)
    values = noisy_sines(120, seed=3)
    model.learn_many(values[:60])
    assert model.current_delays == STAGES[0] and model.is_fitted
    path = tmp_path / "short.ekm"
    model.save(path)
    loaded = EpisodicKoopman.load(path)
    model.learn_many(values[60:])
    loaded.learn_many(values[60:])
    assert model.current_delays == loaded.current_delays == STAGES[0]
    assert model.forecast(10) == loaded.forecast(10)


def test_flat_form_clone_and_cli_express_auto():
    model = EpisodicKoopman()
    flat = model.to_flat()
    assert flat["delays"] is None and flat["window"] == 256
    assert EpisodicKoopman.from_flat(flat).delays is None
    assert EpisodicKoopman.from_flat(parse_params(["delays=null"])).delays is None
    assert model.clone().delays is None and model._get_params()["delays"] is None
    model.learn_many(season(100, 12))
    again = model.clone()  # a clone starts over, at the first stage
    assert again.current_delays == STAGES[0] and model.current_delays == final_delays()
    assert EpisodicKoopman(delays=16).current_delays == 16
    with pytest.raises(ValueError, match="delays"):
        EpisodicKoopman(delays=0)
