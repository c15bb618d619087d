"""Fixtures for the core tests (helpers live in helpers.py)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import noisy_sines


@pytest.fixture
def sines() -> np.ndarray:
    return noisy_sines(1200)
