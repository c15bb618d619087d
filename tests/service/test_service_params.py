"""The service's `params` body covers the library's flat parameters."""

from __future__ import annotations

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


def test_a_series_stored_before_the_growing_stride_keeps_its_fixed_stride():
    # Its stored params lack the name; its snapshots load with 0 doublings, and the
    # record must describe the same model, or restart discards every snapshot.
    from service.store import canonical_params

    stored = EpisodicKoopman().to_flat()
    del stored["stride_doublings"]
    assert canonical_params(stored)["stride_doublings"] == 0
    given = {**stored, "stride_doublings": 2}
    assert canonical_params(given)["stride_doublings"] == 2
