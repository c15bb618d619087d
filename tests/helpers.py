"""Helpers shared by the core tests (fixtures live in conftest.py)."""

from __future__ import annotations

from typing import Any

import numpy as np

from episodic_koopman import EpisodicKoopman
from episodic_koopman.persistence import model_state


def two_sines(n: int, phase: float = 0.3) -> np.ndarray:
    t = np.arange(n, dtype=np.float64)
    return np.sin(2 * np.pi * t / 25.0) + 0.5 * np.sin(2 * np.pi * t / 7.3 + phase)


def noisy_sines(n: int, seed: int = 0, noise: float = 0.05) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return two_sines(n) + noise * rng.standard_normal(n)


def state_fingerprint(model: EpisodicKoopman) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Everything the model has learned, for exact before/after comparisons."""
    meta, arrays = model_state(model)
    return meta, {k: np.array(v, copy=True) for k, v in arrays.items()}


def assert_same_state(a: tuple, b: tuple) -> None:
    meta_a, arrays_a = a
    meta_b, arrays_b = b
    assert meta_a == meta_b
    assert arrays_a.keys() == arrays_b.keys()
    for name in arrays_a:
        assert np.array_equal(arrays_a[name], arrays_b[name], equal_nan=True), name
