"""Forecasts between scored ticks: the fit and recall of the last scored tick, kept in force."""

import numpy as np
from helpers import noisy_sines

from episodic_koopman import EpisodicKoopman
from episodic_koopman.in_force import advanced_records
from episodic_koopman.recall import align

PLAIN = {"delays": 12, "window": 64, "memory": False, "classical_experts": ""}


def test_the_plain_forecast_is_the_scored_ticks_fit_propagated_from_the_current_state():
    y = noisy_sines(900, seed=3) * 2 + 5
    model = EpisodicKoopman.from_flat(PLAIN)  # the forecast is the plain one alone
    model.learn_many(y[:400])
    pipeline = model._pipeline
    stride = model.config.stride if model.config else 8
    s = pipeline.in_force.recall_tick
    assert (400 - s) % stride == 400 - s  # s is the last scored tick
    model.learn_many(y[400 : s + stride])  # to the next scored tick
    s = pipeline.in_force.recall_tick
    fit = pipeline.dyn.fit()  # the current window's fit, at a scored tick
    assert pipeline.in_force.fit is fit
    previous = np.array(model.forecast(6))
    for k in range(1, stride):
        model.learn_one(float(y[s + k - 1]))
        obs = pipeline.obs
        state = obs.lift(obs.history.last(obs.delays))  # the current delay state
        path = fit.propagate(state, 6, obs.embedding.readout, "clip")
        ours = np.array(model.forecast(6))
        np.testing.assert_array_equal(ours, obs.to_raw(path)[:, 0])
        assert not np.array_equal(ours, previous)  # the new observation moved it
        previous = ours
        # ... which an SVD of the scored tick's window, from the current state, confirms.
        reference = model.reference_forecast(6)[:, 0]
        assert np.max(np.abs(ours - reference)) < 1e-8 * np.max(np.abs(reference))
        # Not the current window's fit: that one is taken at the next scored tick.
        assert pipeline.dyn.fit() is not fit
    model.learn_one(float(y[s + stride - 1]))  # the next scored tick takes a new fit
    assert pipeline.in_force.recall_tick == s + stride
    assert pipeline.in_force.fit is pipeline.dyn.fit()


def _admitted_model(
    y: np.ndarray, n: int, shared: bool = False
) -> tuple[EpisodicKoopman, int, np.ndarray]:
    """A default-memory model after ``n`` observations: ``(model, ticks since the scored
    tick, origins of the recalled episodes)``."""
    model = EpisodicKoopman(delays=12, window=64, episode_horizon=12)
    if shared:
        model.attach_memory(model.new_memory())
    model.learn_many(y[:n])
    held = model._pipeline.in_force
    assert held.recall is not None and held.recall.admitted
    k = n - held.recall_tick
    return model, k, held.recall.records["origin"]


def test_recalled_episodes_are_replayed_as_many_ticks_on_read_from_the_history():
    y = noisy_sines(1200, seed=7) * 3 + 10
    for n in (1005, 1008, 1011):  # k = 1, 4, 7 ticks after the scored tick 1004
        model, k, origins = _admitted_model(y, n)
        assert k == n - 1004
        pipeline = model._pipeline
        ds, horizon = 12, 12
        records = pipeline.in_force.recall.records
        now = advanced_records(records, k, pipeline.recaller.refs)
        for i, origin in enumerate(origins):
            o = int(origin) + k  # the episode's counterpart of tick n
            assert o + horizon <= n - 1  # observed by now
            np.testing.assert_array_equal(now["continuation"][i, :, 0], y[o + 1 : o + 1 + horizon])
            np.testing.assert_array_equal(now["history"][i, :, 0], y[o - ds + 1 : o + 1])
        # The analog expert replays them aligned onto the current window, as at a scored tick.
        tracks = pipeline.combine(horizon)[2]
        weights = pipeline.in_force.recall.weights
        aligned = align(now["continuation"], now["history"], y[n - ds : n, None], "zscore")
        expected = np.einsum("e,ehc->hc", weights, aligned)
        np.testing.assert_array_equal(tracks[1], expected)


def test_a_shared_memory_replays_within_its_copies():
    y = noisy_sines(1200, seed=7) * 3 + 10
    model, k, origins = _admitted_model(y, 1009, shared=True)
    records = model._pipeline.in_force.recall.records
    now = advanced_records(records, k, None)
    assert now["continuation"].shape[1] == 12 - k  # what the copies hold
    for i, origin in enumerate(origins):
        o = int(origin) + k
        np.testing.assert_array_equal(now["continuation"][i, :, 0], y[o + 1 : o + 13 - k])
        np.testing.assert_array_equal(now["history"][i, :, 0], y[o - 11 : o + 1])
    assert np.all(np.isfinite(model.forecast(24)))


def test_at_a_scored_tick_nothing_is_advanced():
    y = noisy_sines(1200, seed=7) * 3 + 10
    model, k, _ = _admitted_model(y, 1004)
    records = model._pipeline.in_force.recall.records
    assert k == 0 and advanced_records(records, 0, model._pipeline.recaller.refs) is records


def test_an_exact_refit_between_scored_ticks_puts_its_fit_in_force():
    y = noisy_sines(700, seed=2) * 2 + 5
    model = EpisodicKoopman.from_flat({**PLAIN, "refit_every": 13})
    model.learn_many(y[:300])
    pipeline = model._pipeline
    held = pipeline.in_force
    refits = [n for n in range(301, 400) if (n - pipeline.dyn.ready_at) % 13 == 0]
    between = next(n for n in refits if (n - pipeline.dyn.ready_at) % 8)
    model.learn_many(y[300:between])
    assert held.fit_tick == between and held.recall_tick < between
    assert held.fit is pipeline.dyn.fit()  # taken on the re-standardised window
    reference = model.reference_forecast(6)[:, 0]
    ours = np.array(model.forecast(6))
    assert np.max(np.abs(ours - reference)) < 1e-8 * np.max(np.abs(reference))
