"""Fixtures for the batch forecasting tests: small panels, files and a CLI runner."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from episodic_koopman.cli import app

#: Small models keep the suite fast: the first fit needs 8 + min(32, 16) = 24 observations.
SMALL = {"delays": 8, "window": 32}
SMALL_ARGS = ["-p", "delays=8", "-p", "window=32"]


def long_frame(n_series: int = 4, n: int = 120, freq: str = "D", seed: int = 0) -> pd.DataFrame:
    """Sine panels at different levels and scales, one row per observation."""
    rng = np.random.default_rng(seed)
    stamps = pd.date_range("2024-01-01", periods=n, freq=freq)
    t = np.arange(n)
    parts = []
    for i in range(n_series):
        y = 10.0 * i + (1 + i) * np.sin(2 * np.pi * t / (7 + i)) + 0.05 * rng.standard_normal(n)
        parts.append(pd.DataFrame({"unique_id": f"s{i}", "ds": stamps, "y": y}))
    return pd.concat(parts, ignore_index=True)


@pytest.fixture
def frame() -> pd.DataFrame:
    return long_frame()


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """Write a DataFrame (or raw text) to a file in the test's folder."""

    def _write(content: pd.DataFrame | str, name: str = "input.csv") -> Path:
        path = tmp_path / name
        if isinstance(content, str):
            path.write_text(content)
        elif name.endswith((".parquet", ".pq")):
            content.to_parquet(path, index=False)
        else:
            content.to_csv(path, index=False)
        return path

    return _write


@pytest.fixture
def cli() -> Callable[..., object]:
    """Run ``episodic-koopman ARGS``; the result has exit_code, stdout and stderr."""
    runner = CliRunner()

    def _run(*args: str) -> object:
        return runner.invoke(app, [str(a) for a in args])

    return _run
