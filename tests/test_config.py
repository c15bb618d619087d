"""Configs, the flat form, and river's clone/evaluate contract with config objects."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from helpers import noisy_sines
from river import evaluate, metrics

from episodic_koopman import EpisodicKoopman, MemoryConfig, ModelConfig
from episodic_koopman.flat_params import FLAT_NAMES

SERVICE_STYLE = {"delays": 8, "window": 32, "capacity": 4000, "episode_horizon": 8, "stride": 2}


def test_flat_params_map_onto_the_configs():
    model = EpisodicKoopman.from_flat({**SERVICE_STYLE, "memory_stride": 3, "lifting": "rff"})
    assert model.delays == 8 and model.episode_horizon == 8
    assert model.memory == MemoryConfig(capacity=4000, stride=3)
    assert model.config == ModelConfig(stride=2, lifting="rff")


def test_to_flat_names_every_parameter_and_round_trips():
    model = EpisodicKoopman.from_flat(SERVICE_STYLE)
    flat = model.to_flat()
    assert tuple(flat) == FLAT_NAMES
    assert json.loads(json.dumps(flat)) == flat
    assert EpisodicKoopman.from_flat(flat).to_flat() == flat


def test_flat_memory_false_is_memory_none_and_still_validates_its_knobs():
    model = EpisodicKoopman.from_flat({"memory": False, "capacity": 4000})
    assert model.memory is None and model.to_flat()["memory"] is False
    with pytest.raises(ValueError, match="capacity"):
        EpisodicKoopman.from_flat({"memory": False, "capacity": 0})


def test_stored_flat_params_of_older_versions_are_accepted():
    old = EpisodicKoopman.from_flat({}).to_flat() | {"missing": "raise", "memory": True}
    model = EpisodicKoopman.from_flat(old)
    assert model.missing == "error"
    assert EpisodicKoopman.from_flat(old | {"missing": "skip"}).missing == "drop"


def test_stored_params_lacking_early_grading_run_without_it():
    from episodic_koopman.flat_params import stored_params

    assert stored_params({})["early_grading"] is False
    assert stored_params({"early_grading": True})["early_grading"] is True
    with pytest.raises(TypeError, match="early_grading"):
        ModelConfig(early_grading=1)  # type: ignore[arg-type]


def test_stored_params_lacking_detrend_run_without_it():
    from episodic_koopman.flat_params import stored_params

    assert stored_params({})["detrend"] is False
    assert EpisodicKoopman.from_flat({"detrend": True}).config.detrend is True
    with pytest.raises(TypeError, match="detrend"):
        ModelConfig(detrend=1)  # type: ignore[arg-type]


def test_stored_params_lacking_trend_gate_run_without_it():
    from episodic_koopman.flat_params import stored_params

    assert stored_params({})["trend_gate"] is None
    assert EpisodicKoopman.from_flat(stored_params({})).config.trend_gate is None
    assert ModelConfig().trend_gate == 3.0
    assert EpisodicKoopman.from_flat({"trend_gate": None}).config.trend_gate is None


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "3", True])
def test_trend_gate_must_be_a_positive_finite_number_or_none(bad):
    with pytest.raises(ValueError, match="trend_gate"):
        ModelConfig(trend_gate=bad)


def test_stored_params_lacking_the_classical_experts_run_the_bank_before_theta():
    from episodic_koopman.flat_params import stored_params

    assert stored_params({})["classical_experts"] == "last,seasonal,damped,ar,seasonal_ar"
    assert "theta_seasonal" in EpisodicKoopman.from_flat({}).config.classical_names()


def test_unknown_flat_names_are_rejected_naming_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['capcity'\].*capacity"):
        EpisodicKoopman.from_flat({"capcity": 10})
    with pytest.raises(TypeError, match="memory must be true or false"):
        EpisodicKoopman.from_flat({"memory": "yes"})


def test_constructor_rejects_a_bool_memory_with_a_hint():
    with pytest.raises(TypeError, match="memory=None"):
        EpisodicKoopman(memory=False)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="config must be a ModelConfig"):
        EpisodicKoopman(config={"stride": 2})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "make,name",
    [
        (lambda: MemoryConfig(top_k=0), "top_k"),
        (lambda: MemoryConfig(tau=float("nan")), "tau"),
        (lambda: MemoryConfig(stride=0), "memory_stride"),
        (lambda: MemoryConfig(experts="analog,magic"), "experts"),
        (lambda: MemoryConfig(drift_gate="adwin"), "drift_gate"),
        (lambda: ModelConfig(stride=0), "stride"),
        (lambda: ModelConfig(stride_doublings=-1), "stride_doublings"),
        (lambda: ModelConfig(stride_doublings=11), "stride_doublings"),
        (lambda: ModelConfig(stride_doubling_at=0), "stride_doubling_at"),
        (lambda: ModelConfig(stabilize="maybe"), "stabilize"),
        (lambda: ModelConfig(bandwidth=-1.0), "bandwidth"),
    ],
)
def test_configs_validate_on_construction(make, name):
    with pytest.raises((TypeError, ValueError), match=name):
        make()


def test_configs_are_frozen_json_safe_and_compare_by_value():
    memory = MemoryConfig(capacity=4000, drift_gate="kswin")
    with pytest.raises(AttributeError):
        memory.capacity = 5  # type: ignore[misc]
    as_json = json.loads(json.dumps(memory.to_dict()))
    assert MemoryConfig.from_dict(as_json) == memory
    assert copy.deepcopy(memory) == memory
    assert ModelConfig.from_dict(ModelConfig(stride=3).to_dict()) == ModelConfig(stride=3)
    with pytest.raises(ValueError, match="unknown ModelConfig field"):
        ModelConfig.from_dict({"strde": 3})


def test_river_clone_rebuilds_configs_by_value():
    model = EpisodicKoopman(
        delays=8, window=32, memory=MemoryConfig(capacity=500), config=ModelConfig(stride=2)
    )
    model.learn_many(noisy_sines(200))
    fresh = model.clone()
    assert fresh._get_params() == model._get_params()
    assert fresh.memory == model.memory and fresh.n_observations == 0
    off = model.clone({"memory": None})
    assert off.memory is None and off.config == model.config


def test_river_evaluate_runs_a_configured_model():
    model = EpisodicKoopman(delays=8, window=32, memory=MemoryConfig(capacity=200))
    dataset = ((None, float(y)) for y in noisy_sines(300))
    result = evaluate.evaluate(dataset, model, metrics.MAE(), horizon=4)
    assert np.isfinite(result.get()[0])


def test_a_growing_stride_round_trips_through_json_and_the_flat_form():
    params = {"stride": 4, "stride_doublings": 2, "stride_doubling_at": 300}
    model = EpisodicKoopman.from_flat(params)
    assert model.config == ModelConfig(**params)
    flat = json.loads(json.dumps(model.to_flat()))
    assert {k: flat[k] for k in params} == params
    assert ModelConfig.from_dict(json.loads(json.dumps(model.config.to_dict()))) == model.config
    assert [model.config.stride_at(n) for n in (299, 300, 599, 600, 1200)] == [4, 8, 8, 16, 16]
    assert model.config.max_stride == 16


def test_a_growing_stride_stops_at_the_longest_stride():
    # stride=1_000_000 (never scored, as the operator-only bench runs) stays valid.
    assert ModelConfig(stride=1_000_000).max_stride == 1_000_000
    assert ModelConfig(stride=1_000_000).stride_at(10**9) == 1_000_000
    assert ModelConfig(stride=300_000).max_stride == 600_000
    assert ModelConfig(stride=300_000).stride_at(10**9) == 600_000


def test_detrend_refuses_the_transfer_expert():
    detrended = ModelConfig(detrend=True)
    with pytest.raises(ValueError, match="transfer"):
        EpisodicKoopman(config=detrended, memory=MemoryConfig(strategy="transfer"))
    with pytest.raises(ValueError, match="transfer"):
        EpisodicKoopman(config=detrended, memory=MemoryConfig(experts="analog,transfer"))
    EpisodicKoopman(config=detrended)  # the default experts are fine
