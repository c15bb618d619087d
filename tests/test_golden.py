"""Forecasts equal, float for float, those recorded in tests/data/golden_forecasts.json.

The golden file pins what the model computes: a refactor must leave every number as it was.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from golden_cases import (
    CASES,
    GOLDEN,
    chunks,
    data_available,
    make_model,
    needs_data,
    run_case,
    series,
    summary,
)

RECORDED = json.loads(GOLDEN.read_text())


def _skip_without_data(name: str) -> None:
    if needs_data(name) and not data_available():
        pytest.skip(
            "bike_sharing_hourly.csv not found: set EPISODIC_KOOPMAN_DATA to the data folder"
        )


def test_every_case_is_recorded():
    assert sorted(RECORDED) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_forecasts_equal_the_recorded_ones(name):
    _skip_without_data(name)
    # JSON keeps floats exactly (shortest repr round-trips), so == compares bit for bit.
    assert run_case(name) == RECORDED[name]


@pytest.mark.parametrize("name", ["sines-small", "sines-transfer", "channels-small", "gaps-ffill"])
def test_save_load_midway_continues_to_the_recorded_forecasts(name, tmp_path):
    kind, params = CASES[name]
    parts = chunks(series(kind), 3)
    model = make_model(params)
    model.learn_many(parts[0])
    path = tmp_path / "model.ekm"
    model.save(path)
    loaded = type(model).load(path)
    assert summary(loaded) == RECORDED[name][0]
    for part, recorded in zip(parts[1:], RECORDED[name][1:], strict=True):
        loaded.learn_many(part)
        assert summary(loaded) == recorded


@pytest.mark.parametrize("name", ["sines-small", "sines-kswin", "channels-small", "gaps-skip"])
def test_learn_one_gives_the_recorded_forecasts(name):
    kind, params = CASES[name]
    values = series(kind)
    model = make_model(params)
    for part, recorded in zip(chunks(values, 3), RECORDED[name], strict=True):
        if isinstance(part, dict):
            n = len(next(iter(part.values())))
            for i in range(n):
                model.learn_one({k: float(v[i]) for k, v in part.items()})
        else:
            for value in np.asarray(part):
                model.learn_one(float(value))
        assert summary(model) == recorded
