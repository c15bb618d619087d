"""Shared memory across series: causality, partitions, merging, warm starts, and its benefit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from episodic_koopman import EpisodicKoopman
from episodic_koopman.batch import (
    BatchConfig,
    forecast_panel,
    forecast_partition,
    load_memory,
    merge_memories,
    new_memory,
    panel_backtest,
    panel_from_frame,
    save_memory,
    source_id,
)

from .conftest import SMALL

#: Regime-sharing signals for the benefit test (fit after 16 + min(64, 32) = 48 values).
RECALL = {"delays": 16, "window": 64, "strategy": "analog"}


def signal(n: int, phase: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    tones = np.sin(2 * np.pi * t / 11 + phase) + 0.6 * np.sin(2 * np.pi * t / 29 + 2 * phase)
    return tones + 0.02 * rng.standard_normal(n)


def staggered_frame() -> pd.DataFrame:
    """Three daily series on different scales; the third starts 60 days after the others."""
    parts = []
    for i, (start, n) in enumerate([("2024-01-01", 160), ("2024-01-01", 150), ("2024-03-01", 90)]):
        y = 10.0**i * signal(n, phase=i, seed=i) + 5.0 * i
        ds = pd.date_range(start, periods=n, freq="D")
        parts.append(pd.DataFrame({"unique_id": f"s{i}", "ds": ds, "y": y}))
    return pd.concat(parts, ignore_index=True)


def test_a_partition_learns_its_series_interleaved_in_time():
    """The partition equals models sharing one memory and learning day by day."""
    frame = staggered_frame()
    panel = panel_from_frame(frame)
    cfg = BatchConfig(horizon=5, params=SMALL, scope="shared", partitions=1)
    out = forecast_partition(panel.series, panel.time_kind, cfg)

    memory = new_memory(SMALL)
    models = {}
    for uid in ("s0", "s1", "s2"):
        models[uid] = EpisodicKoopman.from_flat(SMALL)
        models[uid].attach_memory(memory, source=source_id(uid))
    for _, day in frame.sort_values(["ds"], kind="stable").groupby("ds", sort=True):
        for uid, y in zip(day["unique_id"], day["y"], strict=True):
            models[uid].learn_one(float(y))
    for r in out.results:
        expected = models[r.uid].predict(5, level=0.9)
        np.testing.assert_array_equal(r.mean, expected.mean)
        np.testing.assert_array_equal(r.upper, expected.upper)
    # every episode of every series went to the one memory, and each is dated by the
    # timestamp of its own series at which its horizon passed
    assert out.keys.shape[0] == memory.next_id
    assert set(out.records["source"].tolist()) == {source_id(u) for u in ("s0", "s1", "s2")}
    horizon = EpisodicKoopman.from_flat(SMALL).episode_horizon
    for uid in ("s0", "s1", "s2"):
        stamps = frame.loc[frame["unique_id"] == uid, "ds"]
        days = stamps.to_numpy(dtype="datetime64[ns]").astype(np.int64)  # any pandas unit
        mine = out.records["source"] == source_id(uid)
        expected = days[out.records["origin"][mine] + horizon]
        np.testing.assert_array_equal(out.completed_at[mine], expected)


def test_partitions_are_merged_in_order_of_completion():
    panel = panel_from_frame(staggered_frame())
    cfg = BatchConfig(horizon=5, params=SMALL, scope="shared", partitions=2)
    outputs = [
        forecast_partition(panel.series[p::2], panel.time_kind, cfg, partition=p) for p in (0, 1)
    ]
    merged = merge_memories(SMALL, outputs)
    assert len(merged) == sum(o.keys.shape[0] for o in outputs)
    stamps = np.concatenate([o.completed_at for o in outputs])
    keys = np.concatenate([o.keys for o in outputs])
    order = np.lexsort(
        (
            np.concatenate([np.arange(o.keys.shape[0]) for o in outputs]),
            np.repeat([0, 1], [o.keys.shape[0] for o in outputs]),
            stamps,
        )
    )
    np.testing.assert_array_equal(merged.keys(merged.live_ids()), keys[order])
    # the FIFO capacity keeps the newest episodes
    small = merge_memories({**SMALL, "capacity": 10}, outputs)
    np.testing.assert_array_equal(small.keys(small.live_ids()), keys[order][-10:])


def test_results_depend_on_partitions_not_on_jobs():
    panel = panel_from_frame(staggered_frame())
    one = BatchConfig(horizon=5, params=SMALL, scope="shared", partitions=1)
    three = BatchConfig(horizon=5, params=SMALL, scope="shared", partitions=3)
    a, b = forecast_panel(panel, one), forecast_panel(panel, three)
    assert a.partitions == 1 and b.partitions == 3
    assert len(a.memory) == len(b.memory)  # the same episodes, learned with other neighbours
    assert not np.array_equal(a.done[0].mean, b.done[0].mean)
    # with one series per partition, shared memory is each series' own memory
    own = forecast_panel(panel, BatchConfig(horizon=5, params=SMALL))
    for x, y in zip(b.done, own.done, strict=True):
        np.testing.assert_array_equal(x.mean, y.mean)


def test_a_saved_memory_warm_starts_a_new_series(tmp_path):
    """A series too new for episodes of its own recalls those of earlier runs."""
    old = staggered_frame()
    first = forecast_panel(
        panel_from_frame(old), BatchConfig(horizon=5, params=SMALL, scope="shared")
    )
    path = tmp_path / "memory.ekmem"
    save_memory(first.memory, path, first.sources)
    meta, _arrays, manifest = load_memory(path)
    assert meta["next_id"] == first.memory.next_id
    assert set(manifest["sources"].values()) == {"s0", "s1", "s2"}

    y = 3.0 + 2.0 * signal(40, phase=0.5, seed=9)  # fitted, but no episode completed yet
    new = pd.DataFrame({"unique_id": "new", "ds": pd.date_range("2024-06-01", periods=40), "y": y})
    shared = BatchConfig(horizon=5, params=SMALL, scope="shared")
    cold = forecast_panel(panel_from_frame(new), shared).done[0]
    warm = forecast_panel(panel_from_frame(new), shared, initial_memory=path)
    assert not cold.recall_applied
    assert warm.done[0].recall_applied
    assert len(warm.memory) == len(first.memory)  # the new series added no episode yet


def test_a_memory_from_other_models_is_refused(tmp_path):
    frame = staggered_frame()
    result = forecast_panel(panel_from_frame(frame), BatchConfig(5, params=SMALL, scope="shared"))
    path = tmp_path / "memory.ekmem"
    save_memory(result.memory, path, result.sources)
    other = BatchConfig(5, params={**SMALL, "max_rank": 4}, scope="shared")
    with pytest.raises(ValueError, match="keys of length"):
        forecast_panel(panel_from_frame(frame), other, initial_memory=path)


def test_a_new_series_benefits_from_shared_memory():
    """Measured with the interleaved multi-series backtest: a series joining late forecasts
    better from the first fit when it can recall how the same regimes went elsewhere."""
    a = signal(600, 0.0, seed=0)
    c = -3 + 0.1 * signal(600, 2.0, seed=1)
    b = 50 + 20 * signal(110, 1.0, seed=2)
    bt = panel_backtest(
        [a, c, b], horizon=12, start=72, stride=2, params=RECALL, offsets=[0, 0, 450]
    )
    shared, own = bt.scores["shared"]["new"], bt.scores["series"]["new"]
    assert shared["recall_rate"] == 1.0
    assert shared["mase"] < 0.8 * own["mase"]
