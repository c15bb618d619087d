"""The benchmarks' measuring helpers return what they claim (benchmarks/measure.py)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "measure.py"
_spec = importlib.util.spec_from_file_location("bench_measure", _PATH)
assert _spec is not None and _spec.loader is not None
measure = importlib.util.module_from_spec(_spec)
sys.modules["bench_measure"] = measure  # dataclasses look their module up by name
_spec.loader.exec_module(measure)

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/statm").exists(), reason="needs Linux /proc for RSS and I/O counters"
)


def test_rss_grows_by_a_touched_allocation() -> None:
    before = measure.settled_rss_bytes()
    block = np.ones(64 * measure.MIB // 8)  # 64 MiB, every page written
    grown = measure.rss_bytes() - before
    assert 0.9 * block.nbytes <= grown <= 4 * block.nbytes


def test_io_counters_see_this_process_write(tmp_path: Path) -> None:
    before = measure.io_counters()
    with open(tmp_path / "blob", "wb") as fh:
        fh.write(os.urandom(1 << 20))
        fh.flush()
        os.fsync(fh.fileno())
    after = measure.io_counters()
    assert after["wchar"] - before["wchar"] >= 1 << 20
    assert after["write_bytes"] >= before["write_bytes"]


def test_dir_bytes_sums_nested_files(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a").write_bytes(b"x" * 1000)
    (tmp_path / "sub" / "b").write_bytes(b"y" * 234)
    assert measure.dir_bytes(tmp_path) == 1234
    assert measure.dir_bytes(tmp_path / "missing") == 0


def test_numpy_nbytes_counts_each_buffer_once() -> None:
    class Holder:
        def __init__(self) -> None:
            self.big = np.zeros(1000)  # 8,000 bytes
            self.view = self.big[10:20]  # same buffer
            self.parts = {"small": np.zeros(10, dtype=np.float32), "again": self.big}

    assert measure.numpy_nbytes(Holder()) == 8000 + 40


def test_row_ratio_and_verdict() -> None:
    fast = measure.Row("x", 10.0, "us", baseline=300.0, bar=20, goal=40, better="higher")
    fast.judge, fast.speedup = "ratio", True
    assert fast.ratio == pytest.approx(30.0)
    assert fast.verdict() == "bar met"
    small = measure.Row("ram", 0.4, "MiB", bar=1, goal=0.5)
    assert small.ratio is None and small.verdict() == "goal met"
    big = measure.Row("ram", 3.0, "MiB", bar=1, goal=0.5)
    assert big.verdict() == "MISSES bar" and big.bar_factor() == pytest.approx(3.0)


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert measure.percentile(values, 0.99) == 99
    assert measure.percentile(values, 0.5) == 50
    assert measure.percentile([], 0.5) != measure.percentile([], 0.5)  # NaN
