"""Forecasts between scored ticks: the fit and recall of the last scored tick, kept in force."""

import itertools

import numpy as np
from helpers import noisy_sines

from episodic_koopman import EpisodicKoopman

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


def test_between_scored_ticks_the_recall_is_the_presents_with_the_fit_in_force():
    """The query is the fit in force seen from the current delay state, with the newest
    state window, matched against every episode filed by now (not fed to the threshold)."""
    y = noisy_sines(1200, seed=7) * 3 + 10
    model = EpisodicKoopman(delays=12, window=64, episode_horizon=12)
    model.learn_many(y[:1004])  # a scored tick (the first fit came at 36, stride 8)
    pipeline = model._pipeline
    held = pipeline.in_force
    assert held.recall_tick == 1004
    fit, threshold = held.fit, pipeline.recaller.threshold.get_state()
    seen = [[r.id for r in model.predict(12).recalled]]
    for k in range(1, 8):
        n = 1004 + k
        model.learn_one(float(y[n - 1]))
        forecast = model.predict(12)
        memory = model.episode_memory
        newest = memory.get(np.array([memory.next_id - 1]))["origin"][0]
        assert newest == n - 1 - 12  # every due episode is filed
        obs = pipeline.obs
        state = obs.lift(obs.history.last(obs.delays))
        query = pipeline.recaller.query(fit, state, obs.embedding, obs.history)
        expected = pipeline.recaller.recall(query, n - 1, observe=False)
        assert [r.id for r in forecast.recalled] == expected.ids.tolist()
        assert [r.weight for r in forecast.recalled] == expected.weights.tolist()
        assert held.fit is fit and held.recall_tick == 1004
        seen.append(expected.ids.tolist())
    np.testing.assert_array_equal(pipeline.recaller.threshold.get_state(), threshold)
    assert len({tuple(ids) for ids in seen}) > 1  # the recall follows the present


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


def test_a_growing_stride_scores_at_multiples_of_the_stride_in_force():
    # stride 4, doubled from 200 observations and again from 400: scored ticks are the
    # counts n (since the first fit) where the stride in force at n divides n - ready_at.
    y = noisy_sines(700, seed=2) * 2 + 5
    model = EpisodicKoopman.from_flat(
        {**PLAIN, "stride": 4, "stride_doublings": 2, "stride_doubling_at": 200}
    )
    scored = []
    for n, v in enumerate(y, start=1):
        model.learn_one(float(v))
        pipeline = model._pipeline
        if pipeline is not None and pipeline.in_force.recall_tick == n:
            scored.append(n)
    ready_at = model._pipeline.dyn.ready_at
    expected = [n for n in range(ready_at, 701) if (n - ready_at) % model.config.stride_at(n) == 0]
    assert scored == expected
    gaps = {b - a for a, b in itertools.pairwise(scored)}
    assert {4, 8, 16} <= gaps <= {4, 8, 12, 16}
