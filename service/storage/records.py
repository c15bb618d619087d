"""What storage holds and publishes: series records, write commands, their outcomes and effects.

These types are the vocabulary shared by every backend, the committer and the model
registry; none of them knows which database is underneath.
"""

from __future__ import annotations

import json
import time
import zlib
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..ingest import ParsedBatch
from ..timestamps import Spacing, TimeKey, render_t


@dataclass(frozen=True, slots=True)
class SeriesRecord:
    """The committed state of one series (immutable: each commit publishes a new one)."""

    sid: int
    id: str
    incarnation: str
    params: dict[str, Any]
    channels: tuple[str, ...] | None
    time_kind: str | None
    count: int
    last_key: TimeKey | None
    tz: int | None
    spacing: Spacing
    created_at: float

    @property
    def last_t(self) -> str | float | None:
        if self.last_key is None or self.time_kind is None:
            return None
        return render_t(self.time_kind, self.last_key, self.tz)

    @property
    def n_channels(self) -> int:
        return 1 if self.channels is None else len(self.channels)

    def spacing_value(self) -> float | None:
        """The regular step in seconds (ISO) or time units (numbers), if regular."""
        if not self.spacing.regular(self.count) or self.spacing.step is None:
            return None
        step = self.spacing.step
        return step / 1e6 if self.time_kind == "iso" else float(step)


def record_from_columns(
    sid: int,
    series_id: str,
    incarnation: str,
    params: str,
    channels: str | None,
    time_kind: str | None,
    count: int,
    last_key: TimeKey | None,
    tz: int | None,
    step: TimeKey | None,
    run: int,
    created_at: float,
) -> SeriesRecord:
    """A record from its stored columns (params and channels are JSON text in every backend)."""
    return SeriesRecord(
        sid=sid,
        id=series_id,
        incarnation=incarnation,
        params=json.loads(params),
        channels=tuple(json.loads(channels)) if channels is not None else None,
        time_kind=time_kind,
        count=count,
        last_key=last_key,
        tz=tz,
        spacing=Spacing(step, run),
        created_at=created_at,
    )


def shard_of(series_id: str, n_shards: int) -> int:
    """The ownership shard of a series: a stable hash of its id (the same in every process).

    >>> shard_of("room-1.temp", 64) == shard_of("room-1.temp", 64) and 0 <= shard_of("a", 64) < 64
    True
    """
    return zlib.crc32(series_id.encode()) % n_shards


# ------------------------------------------------------------------ commands
@dataclass
class Ingest:
    series_id: str
    batch: ParsedBatch


@dataclass
class Configure:
    series_id: str
    params: dict[str, Any]


@dataclass
class Delete:
    series_id: str


Command = Ingest | Configure | Delete


@dataclass
class IngestOutcome:
    accepted: int
    duplicates: int
    record: SeriesRecord


@dataclass
class ConfigureOutcome:
    record: SeriesRecord
    created: bool
    changed: bool


@dataclass
class Chunk:
    """Committed observations ``start .. start + len(values) - 1`` of a series, to apply."""

    start: int
    values: np.ndarray  # (n, c) float64
    keys: list[TimeKey]
    committed_at: float = field(default_factory=time.monotonic)  # bounds the models' lag

    @property
    def end(self) -> int:
        return self.start + self.values.shape[0]


@dataclass
class Effect:
    kind: str  # "upsert" | "delete" | "append"
    series_id: str
    record: SeriesRecord | None = None
    chunk: Chunk | None = None


class Publisher(Protocol):
    """Receives the effects of committed transactions (the model registry)."""

    def publish(self, effects: list[Effect]) -> None: ...


@dataclass
class Queued:
    """A command waiting for the committer, with the future its request awaits."""

    command: Command
    future: Future
    effects: list[Effect] = field(default_factory=list)
