"""One batch run: tasks made from a `Panel`, run on an engine, gathered in input order."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..memory import EpisodeMemory
from .config import BatchConfig
from .engines import ENGINES, dask_map, local_map
from .errors import BatchInputError
from .reading import Panel
from .shared_memory import load_memory, merge_memories, new_memory
from .tasks import PartitionOutput, SeriesResult, forecast_chunk, forecast_partition
from .writing import write_model_index


@dataclass
class BatchResult:
    """Every series' outcome, in input order, with timings and the merged shared memory."""

    results: list[SeriesResult]
    kind: str
    tz: str | None
    seconds: float
    engine: str
    workers: int
    scope: str
    partitions: int | None = None
    memory: EpisodeMemory | None = None
    sources: dict[int, Any] = field(default_factory=dict)
    input_problems: list[tuple[str, str]] = field(default_factory=list)

    @property
    def done(self) -> list[SeriesResult]:
        return [r for r in self.results if r.ok]

    @property
    def failed(self) -> list[SeriesResult]:
        return [r for r in self.results if not r.ok]

    @property
    def throughput(self) -> float:
        """Series forecast per second (wall clock)."""
        return len(self.done) / self.seconds if self.seconds > 0 else float("nan")

    def frame(self) -> Any:
        """The forecasts as a DataFrame: ``unique_id, ds, step, mean, lower, upper``."""
        import pandas as pd

        done = self.done
        h = done[0].mean.size if done else 0  # type: ignore[union-attr]
        columns: dict[str, Any] = {
            "unique_id": np.repeat(np.array([r.uid for r in done], dtype=object), h),
            "ds": np.concatenate([r.ds for r in done]) if done else np.zeros(0),  # type: ignore[misc]
            "step": np.tile(np.arange(1, h + 1, dtype=np.int64), len(done)),
        }
        for name in ("mean", "lower", "upper"):
            columns[name] = np.concatenate([getattr(r, name) for r in done]) if done else []
        frame = pd.DataFrame(columns)
        if self.kind == "datetime":
            stamps = pd.to_datetime(frame["ds"].to_numpy(dtype=np.int64))
            if self.tz is not None:
                stamps = stamps.tz_localize("UTC").tz_convert(self.tz)
            frame["ds"] = stamps
        return frame


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def forecast_panel(
    panel: Panel,
    cfg: BatchConfig,
    engine: str = "local",
    jobs: int = 1,
    scheduler: str | None = None,
    chunk_size: int | None = None,
    initial_memory: str | Path | None = None,
    connect_timeout: float = 10.0,
    on_progress: Callable[[int, list[SeriesResult]], None] | None = None,
) -> BatchResult:
    """Forecast every series of ``panel`` (see the module docstring for scopes and engines).

    ``on_progress(n_series, results)`` is called as each task finishes.
    ``connect_timeout``: seconds to wait for a Dask scheduler given by address.
    """
    cfg.validate()
    if engine not in ENGINES:
        raise BatchInputError(f"engine must be one of {list(ENGINES)}, got {engine!r}")
    if jobs < 1:
        raise BatchInputError(f"jobs must be >= 1, got {jobs}")
    if cfg.save_dir is not None:
        Path(cfg.save_dir).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    initial = None
    if initial_memory is not None:
        if cfg.scope != "shared":
            raise BatchInputError("an initial memory needs --memory-scope shared")
        meta, arrays, manifest = load_memory(initial_memory)
        expected = new_memory(cfg.params).dim
        if manifest["dim"] != expected:
            raise BatchInputError(
                f"{initial_memory} has keys of length {manifest['dim']}, these models need "
                f"{expected}: the memory was built with other delays, max_rank or mode_delays"
            )
        initial = (meta, arrays)
    series = panel.series
    workers = max(1, jobs)
    if cfg.scope == "series":
        size = chunk_size or max(1, min(32, math.ceil(len(series) / (workers * 8))))
        tasks = [(chunk, panel.time_kind, cfg) for chunk in _chunks(series, size)]
        fn: Callable[..., Any] = forecast_chunk
        partitions = None
    else:
        if cfg.partitions is None and engine == "dask" and scheduler is not None:
            # The cluster's size is not ours to guess, and results depend on partitions.
            raise BatchInputError(
                "with --scheduler, give --partitions for the shared scope (for example the "
                "number of worker processes): results depend on it"
            )
        partitions = cfg.partitions or workers
        groups = [series[p::partitions] for p in range(partitions)]
        tasks = [(g, panel.time_kind, cfg, p, initial) for p, g in enumerate(groups) if g]
        fn = forecast_partition
    info: dict[str, Any] = {}  # what the engine found out (Dask: the number of workers)
    if engine == "dask":
        stream = dask_map(fn, tasks, jobs, scheduler, connect_timeout, info)
    else:
        stream = local_map(fn, tasks, jobs)
    by_index: dict[int, SeriesResult] = {}
    outputs: list[PartitionOutput] = []
    for _, output in stream:
        results = output if cfg.scope == "series" else output.results
        if cfg.scope == "shared":
            outputs.append(output)
        for r in results:
            by_index[r.index] = r
        if on_progress is not None:
            on_progress(len(results), results)
    memory, sources = None, {}
    if cfg.scope == "shared":
        outputs.sort(key=lambda o: o.partition)
        memory = merge_memories(cfg.params, outputs, initial)
        for o in outputs:
            sources.update(o.sources)
    ordered = [by_index[s.index] for s in series]
    if cfg.save_dir is not None:
        write_model_index(Path(cfg.save_dir), ordered)
    return BatchResult(
        ordered,
        panel.time_kind,
        panel.tz,
        time.perf_counter() - started,
        engine,
        info.get("workers", workers),
        cfg.scope,
        partitions,
        memory,
        sources,
        list(panel.problems),
    )
