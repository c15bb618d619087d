"""The forecast envelope: every expert's forecast stays within the widened recent range."""

from __future__ import annotations

import numpy as np
import pytest

from episodic_koopman import EpisodicKoopman, ModelConfig
from episodic_koopman.envelope import recent_envelope


def outage_series(n: int = 700, seed: int = 3) -> np.ndarray:
    """A daily cycle around 100 with one outage (a drop to 24 for 15 steps), like water_flow."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    y = 100 + 2 * np.sin(2 * np.pi * t / 24) + 0.3 * rng.standard_normal(n)
    y[600:615] = 24.0
    return y


def test_recent_envelope_widens_the_range_per_channel() -> None:
    rows = np.array([[0.0, 10.0], [2.0, 10.0], [1.0, 10.0]])
    low, high = recent_envelope(rows, margin=1.0)
    np.testing.assert_array_equal(low, [-2.0, 10.0])
    np.testing.assert_array_equal(high, [4.0, 10.0])


@pytest.mark.parametrize("memory", [True, False])
def test_every_expert_stays_in_the_envelope_after_an_outage(memory: bool) -> None:
    model = EpisodicKoopman(memory=None if not memory else EpisodicKoopman().memory)
    unclipped = EpisodicKoopman(memory=model.memory, config=ModelConfig(envelope=None))
    y = outage_series()
    escaped = 0
    for i, v in enumerate(y):
        model.learn_one(v)
        unclipped.learn_one(v)
        if i < 620 or i % 4:
            continue
        pipeline, free = model._read(), unclipped._read()
        assert pipeline is not None and free is not None
        low, high = pipeline.issuer.envelope()
        # The envelope is the last window + delays - 1 observations, widened by their range.
        recent = y[i + 1 - (model.window + model.current_delays - 1) : i + 1]
        span = recent.max() - recent.min()
        assert low[0] == recent.min() - span and high[0] == recent.max() + span
        model.forecast(24)  # brings episodes and scores up to date, as any read does
        unclipped.forecast(24)
        _, _, tracks, available = pipeline.issuer.combine(24, pipeline.issuer.recall_now())
        assert np.all(tracks[available] >= low) and np.all(tracks[available] <= high)
        _, _, free_tracks, free_available = free.issuer.combine(24, free.issuer.recall_now())
        escaped += int(np.any(free_tracks[free_available] > high))
        escaped += int(np.any(free_tracks[free_available] < low))
    # Without the envelope, some expert leaves it after the outage: the clip does something.
    assert escaped > 0


def test_no_envelope_is_validated_and_round_trips() -> None:
    with pytest.raises(ValueError, match="envelope"):
        ModelConfig(envelope=-0.5)
    model = EpisodicKoopman(config=ModelConfig(envelope=None))
    assert EpisodicKoopman.from_flat(model.to_flat()).config.envelope is None


def test_a_short_history_is_clipped_to_its_range_with_a_wider_margin() -> None:
    # Before the operator's span is held, an AR fitted on a few rows across an early
    # outage forecast 1e14: the range held still bounds it, widened by span / held.
    model = EpisodicKoopman()
    y = outage_series()
    model.learn_many(y[:100])
    pipeline = model._read()
    assert pipeline is not None
    span = model.window + model.current_delays - 1
    assert 100 < span
    low, high = pipeline.issuer.envelope()
    width = y[:100].max() - y[:100].min()
    margin = span / 100 * width
    assert low[0] == pytest.approx(y[:100].min() - margin)
    assert high[0] == pytest.approx(y[:100].max() + margin)
