"""One worker task: a chunk of independent series, or one shared-memory partition.

Every task turns series into `SeriesResult`s; a failure of one series (a bad
timestamp, too few observations, even an internal error) becomes that series'
result, so it never stops the task's other series.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..forecaster import EpisodicKoopman
from .config import BatchConfig
from .errors import SeriesError, series_label
from .reading import SeriesData
from .shared_memory import new_memory, source_id
from .timestamps import Prepared, future_timestamps, prepare_series


@dataclass
class SeriesResult:
    """The outcome for one series: its forecast, or why there is none."""

    index: int
    uid: Any
    ok: bool
    reason: str | None = None
    ds: np.ndarray | None = None
    mean: np.ndarray | None = None
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    n_observations: int = 0
    n_filled: int = 0
    recall_applied: bool = False
    model_path: str | None = None


def min_observations(params: dict[str, Any]) -> int:
    """Observations a model with ``params`` needs before its first fit."""
    return EpisodicKoopman.from_flat(params).min_observations


def model_filename(uid: Any) -> str:
    """A safe, collision-free file name for a series' model.

    >>> model_filename("store 1/item"), model_filename("a")
    ('store_1_item-fcce658d.ekm', 'a.ekm')
    """
    text = str(uid)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", text)[:100]
    if safe.startswith("."):  # no hidden files
        safe = "_" + safe[1:]
    if safe != text or not safe:
        safe = f"{safe}-{hashlib.blake2b(text.encode(), digest_size=4).hexdigest()}"
    return f"{safe}.ekm"


def _checked(s: SeriesData, kind: str, cfg: BatchConfig) -> Prepared:
    prepared = prepare_series(s, kind, cfg.missing)
    needed = min_observations(cfg.params)
    if prepared.values.size < needed:
        raise SeriesError(
            f"series {series_label(s.uid)}: too short, {prepared.values.size} observations; "
            f"the model needs at least {needed} (delays + min(window, 2 * delays))"
        )
    return prepared


def _finish(
    s: SeriesData, model: EpisodicKoopman, prepared: Prepared, kind: str, cfg: BatchConfig
) -> SeriesResult:
    forecast = model.predict(cfg.horizon, level=cfg.level)
    path = None
    if cfg.save_dir is not None:
        path = os.path.join(cfg.save_dir, model_filename(s.uid))
        model.save(path)
    return SeriesResult(
        s.index,
        s.uid,
        True,
        ds=future_timestamps(prepared, cfg.horizon, kind),
        mean=np.asarray(forecast.mean, dtype=np.float64),
        lower=np.asarray(forecast.lower, dtype=np.float64),
        upper=np.asarray(forecast.upper, dtype=np.float64),
        n_observations=model.n_observations,
        n_filled=prepared.n_filled,
        recall_applied=forecast.recall_applied,
        model_path=path,
    )


def _failure(s: SeriesData, exc: Exception) -> SeriesResult:
    if isinstance(exc, SeriesError):
        reason = str(exc)
    elif isinstance(exc, ValueError | TypeError):
        reason = f"series {series_label(s.uid)}: {exc}"
    else:  # not a user error: keep the type so that it can be reported as a bug
        reason = f"series {series_label(s.uid)}: internal error {type(exc).__name__}: {exc}"
    return SeriesResult(s.index, s.uid, False, reason=reason)


def forecast_one(s: SeriesData, kind: str, cfg: BatchConfig) -> SeriesResult:
    """Fit a fresh model (its own memory) on one series and forecast it."""
    try:
        prepared = _checked(s, kind, cfg)
        model = EpisodicKoopman.from_flat(cfg.params)
        model.learn_many(prepared.values)
        return _finish(s, model, prepared, kind, cfg)
    except Exception as exc:
        return _failure(s, exc)


def forecast_chunk(chunk: list[SeriesData], kind: str, cfg: BatchConfig) -> list[SeriesResult]:
    """`forecast_one` over a chunk of independent series (one worker task)."""
    return [forecast_one(s, kind, cfg) for s in chunk]


@dataclass
class PartitionOutput:
    """What a shared-scope partition sends back: forecasts and the episodes it added."""

    results: list[SeriesResult]
    keys: np.ndarray
    records: dict[str, np.ndarray]
    completed_at: np.ndarray  # timestamp at which each episode's horizon passed (ds encoding)
    partition: int
    sources: dict[int, Any]


def forecast_partition(
    chunk: list[SeriesData],
    kind: str,
    cfg: BatchConfig,
    partition: int = 0,
    initial: tuple[dict[str, Any], dict[str, np.ndarray]] | None = None,
) -> PartitionOutput:
    """Fit the series of one partition on one shared memory, in time order, and forecast.

    At each timestamp (in the union of the series' grids) every series observed then
    learns its value; a series whose spacing differs from the others simply has
    fewer ticks. ``initial`` (a memory state) is the memory the partition starts from.
    """
    memory = new_memory(cfg.params)
    if initial is not None:
        memory.set_state(*initial)
    first_new = memory.next_id
    results: dict[int, SeriesResult] = {}
    live: list[tuple[SeriesData, Prepared, EpisodicKoopman]] = []
    for s in chunk:
        try:
            prepared = _checked(s, kind, cfg)
            model = EpisodicKoopman.from_flat(cfg.params)
            model.attach_memory(memory, source=source_id(s.uid))
            live.append((s, prepared, model))
        except Exception as exc:
            results[s.index] = _failure(s, exc)
    # Every (timestamp, series) event, in time order; ties in series order.
    times = np.concatenate([p.grid for _, p, _ in live]) if live else np.zeros(0)
    owner = np.concatenate([np.full(p.grid.size, k) for k, (_, p, _) in enumerate(live)])
    position = np.concatenate([np.arange(p.grid.size) for _, p, _ in live]) if live else owner
    order = np.lexsort((owner, times)) if live else owner
    failed: set[int] = set()
    for k, j in zip(owner[order].tolist(), position[order].tolist(), strict=True):
        if k in failed:
            continue
        s, prepared, model = live[k]
        try:
            model.learn_one(float(prepared.values[j]))
        except Exception as exc:
            failed.add(k)
            results[s.index] = _failure(s, exc)
    for k, (s, prepared, model) in enumerate(live):
        if k not in failed:
            try:
                results[s.index] = _finish(s, model, prepared, kind, cfg)
            except Exception as exc:
                results[s.index] = _failure(s, exc)
    # Episodes added in this run, with the timestamp at which each became recallable.
    ids = memory.live_ids()
    ids = ids[ids >= first_new]
    records = memory.get(ids)
    horizon = EpisodicKoopman.from_flat(cfg.params).episode_horizon
    grids = {source_id(s.uid): p.grid for s, p, _ in live}
    completed = np.array(
        [
            grids[int(src)][min(int(o) + horizon, grids[int(src)].size - 1)]
            for src, o in zip(records.get("source", []), records.get("origin", []), strict=True)
        ],
        dtype=times.dtype if live else np.float64,  # int64 ns stay exact
    )
    return PartitionOutput(
        [results[s.index] for s in chunk],
        memory.keys(ids).copy(),
        {name: column.copy() for name, column in records.items()},
        completed,
        partition,
        {source_id(s.uid): s.uid for s in chunk},
    )
