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
