"""The service's `params` body covers the library's flat parameters."""

from __future__ import annotations

import pytest

from episodic_koopman import EpisodicKoopman
from service.schemas import ModelParams

#: Not settable over HTTP, on purpose: pushes must be finite numbers, so `missing` has
#: nothing to act on; and an explicit null means "the default" in `params`, so `envelope`'s
#: "no clipping" (None) could not be said.
NOT_EXPOSED = {"missing", "envelope"}


def test_every_flat_parameter_but_the_excluded_is_a_service_parameter():
    flat = set(EpisodicKoopman().to_flat())
    fields = set(ModelParams.model_fields)
    assert fields <= flat
    assert flat - fields == NOT_EXPOSED


def test_stride_schedule_reaches_the_model():
    given = ModelParams(stride_doublings=0, stride_doubling_at=100).given()
    model = EpisodicKoopman.from_flat(given)
    assert model.to_flat()["stride_doublings"] == 0
    assert model.to_flat()["stride_doubling_at"] == 100


@pytest.mark.parametrize(
    ("name", "ran_with", "now"),
    [("stride_doublings", 0, 2), ("early_grading", False, True), ("trend_gate", None, 3.0)],
)
def test_a_series_stored_before_a_parameter_keeps_what_it_ran_with(
    name: str, ran_with: object, now: object
) -> None:
    # Its stored params lack the name; its snapshots load with what it ran with, and the
    # record must describe the same model, or restart discards every snapshot.
    from service.store import canonical_params

    stored = EpisodicKoopman().to_flat()
    assert stored[name] == now
    del stored[name]
    assert canonical_params(stored)[name] == ran_with
    assert canonical_params({**stored, name: now})[name] == now
