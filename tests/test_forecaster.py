"""The public API of EpisodicKoopman, end to end."""

import numpy as np
import pytest
from helpers import assert_same_state, noisy_sines, state_fingerprint
from river import datasets, evaluate, metrics
from river.time_series.base import Forecaster

from episodic_koopman import EpisodicKoopman, Forecast, MemoryConfig, ModelConfig


def test_is_a_river_forecaster_and_runs_in_river_evaluate():
    model = EpisodicKoopman(delays=12, window=48, episode_horizon=12)
    assert isinstance(model, Forecaster)
    result = evaluate.evaluate(datasets.AirlinePassengers(), model, metrics.MAE(), horizon=12)
    maes = [m.get() for m in result.metrics]
    assert len(maes) == 12 and all(np.isfinite(maes))
    # The series has mean ~280: a working model is far better than predicting 0.
    assert max(maes) < 120


def test_fallback_before_the_first_fit_is_the_last_value():
    model = EpisodicKoopman(delays=8, window=32)
    assert model.forecast(horizon=3) == [0.0, 0.0, 0.0]
    for y in [3.0, 5.0, 4.0]:
        model.learn_one(y)
    assert model.forecast(horizon=2) == [4.0, 4.0]
    f = model.predict(horizon=2)
    assert f.fallback and f.spectrum is None
    assert not model.is_fitted


def test_predict_returns_a_self_explaining_forecast(sines):
    model = EpisodicKoopman(delays=16, window=96, episode_horizon=16)
    model.learn_many(sines)
    f = model.predict(horizon=20, level=0.8)
    assert isinstance(f, Forecast)
    assert f.mean.shape == f.lower.shape == f.upper.shape == (20,)
    assert np.all(f.lower <= f.mean) and np.all(f.mean <= f.upper)
    assert f.recalled and f.recall_applied
    assert sum(r.weight for r in f.recalled) == pytest.approx(1.0)
    assert f.spectrum is not None and f.spectrum.summary()
    d = f.to_dict()
    assert set(d) >= {"mean", "lower", "upper", "recalled", "spectrum"}
    assert model.forecast(horizon=20) == pytest.approx(list(f.mean))


def test_learn_many_equals_a_loop_of_learn_one_bit_for_bit(sines):
    a = EpisodicKoopman(delays=16, window=96, episode_horizon=16)
    b = EpisodicKoopman(delays=16, window=96, episode_horizon=16)
    a.learn_many(sines)
    for y in sines:
        b.learn_one(float(y))
    assert_same_state(state_fingerprint(a), state_fingerprint(b))
    assert a.forecast(horizon=30) == b.forecast(horizon=30)


def test_multichannel_forecasts_every_channel():
    rng = np.random.default_rng(0)
    t = np.arange(800)
    rows = [
        {"a": float(np.sin(0.2 * k)), "b": float(2 * np.cos(0.2 * k) + 0.01 * rng.normal())}
        for k in t
    ]
    model = EpisodicKoopman(delays=8, window=64, episode_horizon=8, memory=None)
    for row in rows:
        model.learn_one(row)
    out = model.forecast(horizon=5)
    assert len(out) == 5 and all(set(o) == {"a", "b"} for o in out)
    expected_a = np.sin(0.2 * np.arange(800, 805))
    np.testing.assert_allclose([o["a"] for o in out], expected_a, atol=0.01)
    f = model.predict(horizon=5)
    assert f.mean.shape == (5, 2) and f.channels == ["a", "b"]
    # Channel order is fixed by the first observation; later dicts may list keys in any order.
    model.learn_one({"b": 1.0, "a": 0.5})
    assert model.channels == ["a", "b"]


def test_missing_value_policies():
    y = list(noisy_sines(300))
    skip = EpisodicKoopman(delays=8, window=32, missing="drop")
    skip.learn_many([*y[:100], float("nan"), *y[100:]])
    reference = EpisodicKoopman(delays=8, window=32)
    reference.learn_many(y)
    assert skip.n_missing == 1 and skip.n_observations == 300
    assert skip.forecast(horizon=5) == reference.forecast(horizon=5)
    ffill = EpisodicKoopman(delays=8, window=32, missing="ffill")
    ffill.learn_many([*y[:100], float("nan"), *y[100:]])
    assert ffill.n_missing == 1 and ffill.n_observations == 301
    with pytest.raises(ValueError, match="before any finite value"):
        EpisodicKoopman(missing="ffill").learn_one(float("nan"))
    with pytest.raises(ValueError, match="missing='drop' or 'ffill'"):
        EpisodicKoopman().learn_one(float("nan"))


def test_old_missing_names_are_aliases():
    assert EpisodicKoopman(missing="skip").missing == "drop"
    assert EpisodicKoopman(missing="raise").missing == "error"
    with pytest.raises(ValueError, match="missing must be one of"):
        EpisodicKoopman(missing="interpolate")  # batch only: it needs the whole series


def test_clone_has_parameters_but_no_state(sines):
    model = EpisodicKoopman(delays=16, window=96, memory=MemoryConfig(strategy="residual"))
    model.learn_many(sines)
    fresh = model.clone()
    assert fresh._get_params() == model._get_params()
    assert fresh.n_observations == 0 and fresh.memory_size == 0


@pytest.mark.parametrize("strategy", ["analog", "residual", "transfer"])
def test_every_strategy_reduces_error_while_the_window_holds_the_old_regime(strategy):
    # Regimes recur every 300 steps. For ~window steps after a switch the sliding
    # window still mixes in the old regime, and memory knows what comes next.
    # (Whether memory should also act in steady state is a policy question, guarded
    # by the accuracy tests.)
    rng = np.random.default_rng(1)
    y = np.concatenate(
        [
            np.sin(2 * np.pi * np.arange(300) / p) + 0.02 * rng.normal(size=300)
            for p in [12.0, 31.0] * 4
        ]
    )
    errors = {}
    for memory in (True, False):
        model = EpisodicKoopman(
            delays=16,
            window=160,
            memory=MemoryConfig(strategy=strategy) if memory else None,
            episode_horizon=8,
            config=ModelConfig(stride=2),
        )
        abs_err = []
        for k, value in enumerate(y):
            if k > 1200 and k % 300 < 160 and k + 7 < len(y):
                abs_err.append(abs(model.forecast(horizon=8)[-1] - y[k + 7]))
            model.learn_one(value)
        errors[memory] = float(np.mean(abs_err))
    assert errors[True] < 0.85 * errors[False], errors


def test_episodes_are_browsable_and_json_safe(sines):
    import json

    model = EpisodicKoopman(delays=16, window=96, episode_horizon=16)
    model.learn_many(sines)
    page = model.episodes(offset=2, limit=3)
    assert len(page) == 3
    assert page[0]["id"] < page[1]["id"] < page[2]["id"]
    json.dumps(page)
    # The operator's forecast at an episode is kept only where an expert uses it.
    assert page[0]["forecast"] is None and page[0]["mae"] is None
    assert len(page[0]["realised"]) == 16
    residual = EpisodicKoopman(
        delays=16, window=96, episode_horizon=16, memory=MemoryConfig(strategy="residual")
    )
    residual.learn_many(sines)
    page = residual.episodes(offset=2, limit=3)
    json.dumps(page)
    assert len(page[0]["forecast"]) == 16 and page[0]["mae"] >= 0


def test_models_can_share_one_memory_across_scales():
    from episodic_koopman.memory import EpisodeMemory

    models = []
    shared = EpisodicKoopman(delays=12, window=64, episode_horizon=8).new_memory()
    assert isinstance(shared, EpisodeMemory) and shared.holds_copies
    for source, scale in enumerate([1.0, 1000.0]):
        model = EpisodicKoopman(delays=12, window=64, episode_horizon=8)
        model.attach_memory(shared, source=source)
        models.append((model, scale))
    y = noisy_sines(600)
    for model, scale in models:
        model.learn_many(y * scale)
    assert {e["source"] for e in models[1][0].episodes(limit=10_000)} == {0, 1}
    # The large-scale model recalls the unit-scale model's episodes and stays on its scale.
    f = models[1][0].predict(horizon=5)
    assert f.recall_applied
    assert np.max(np.abs(f.mean)) > 100


def test_attach_memory_checks_compatibility_and_timing():
    from episodic_koopman.memory import EpisodeMemory

    model = EpisodicKoopman(delays=12, window=64)
    model.attach_memory(EpisodeMemory(dim=7))
    with pytest.raises(ValueError, match="same delays"):
        model.learn_one(1.0)
    assert model.n_observations == 0 and model.channels is None and model.episode_memory is None
    fitted = EpisodicKoopman(delays=12, window=64)
    fitted.learn_one(1.0)
    with pytest.raises(ValueError, match="before"):
        fitted.attach_memory(EpisodeMemory(dim=7))


def test_own_memory_cannot_be_shared():
    model = EpisodicKoopman(delays=12, window=64)
    model.learn_one(0.0)
    own = model.episode_memory
    assert own is not None and not own.holds_copies
    with pytest.raises(ValueError, match="new_memory"):
        EpisodicKoopman(delays=12, window=64).attach_memory(own)


def test_episodes_keep_normalised_mode_shapes_only_when_matching_uses_them(sines):
    ignoring = EpisodicKoopman(
        delays=16, window=96, memory=MemoryConfig(mode_weight=0.0, mode_delays=4)
    )
    ignoring.learn_many(sines[:400])
    pipeline = ignoring._pipeline
    assert "modes" not in pipeline.recorder.refs.fits.rows(np.array([0]))
    # Keys leave modes out: eigenvalue block plus state only.
    max_rank = ModelConfig().max_rank
    assert ignoring.episode_memory.dim == 2 * max_rank + 16
    model = EpisodicKoopman(
        delays=16, window=96, memory=MemoryConfig(mode_weight=0.5, mode_delays=4)
    )
    model.learn_many(sines)
    records = model._pipeline.recaller.records(model.episode_memory.live_ids()[:5])
    modes = records["modes"]
    assert modes.shape == (5, max_rank, 4)
    ranks = records["rank"]
    norms = np.linalg.norm(modes, axis=2)
    for norm_row, rank in zip(norms, ranks, strict=True):
        np.testing.assert_allclose(norm_row[:rank], 1.0)
        np.testing.assert_allclose(norm_row[rank:], 0.0)


def test_min_observations_is_when_the_first_fit_happens():
    for params in (
        dict(delays=8, window=32),
        dict(delays=16, window=20),
        dict(delays=3, window=500),
    ):
        model = EpisodicKoopman.from_flat(params)
        for k in range(model.min_observations - 1):
            model.learn_one(float(np.sin(k)))
        assert not model.is_fitted
        model.learn_one(1.0)
        assert model.is_fitted


def test_new_memory_fits_models_of_those_parameters():
    model = EpisodicKoopman(
        delays=8, window=32, memory=MemoryConfig(state_delays=12, mode_weight=0.5)
    )
    for n_channels in (1, 3):
        memory = model.new_memory(n_channels)
        user = model.clone()
        user.attach_memory(memory)
        rows = [{f"c{j}": float(np.sin(0.3 * k + j)) for j in range(n_channels)} for k in range(80)]
        user.learn_many(rows if n_channels > 1 else [r["c0"] for r in rows])
        assert user.memory_size > 0


@pytest.mark.parametrize("channels", [False, True])
def test_forecast_is_the_mean_of_predict_float_for_float(channels):
    # forecast() computes the mean alone; it must be exactly predict()'s, at scored
    # ticks and between them, with memory and for several channels.
    y = noisy_sines(260, seed=5)
    model = EpisodicKoopman(delays=8, window=32, episode_horizon=8)
    for k, value in enumerate(y):
        model.learn_one({"a": float(value), "b": float(-value)} if channels else float(value))
        if k >= 60 and k % 3 == 0:
            points = model.forecast(12)
            mean = model.predict(12).mean
            if channels:
                assert points == [{"a": row[0], "b": row[1]} for row in mean.tolist()]
            else:
                assert points == mean.tolist()
                assert all(type(p) is float for p in points)
    assert model.memory_size > 0
