"""The runtime state of one live series: its committed record, model, pending chunks and
listeners (`Series`), and one SSE client of it (`Subscriber`).

The `service.registry.Registry` holds one `Series` per stored series; the
`service.applier.Applier` applies its pending chunks to its model, and reads take its
lock to use the model.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from typing import Any

from episodic_koopman import EpisodicKoopman

from .store import Chunk, SeriesRecord
from .timestamps import TimeKey


class Subscriber:
    """One SSE client of a series: a small queue of forecast payloads (oldest dropped first)."""

    def __init__(self, horizon: int, level: float, maxsize: int = 16) -> None:
        self.horizon = horizon
        self.level = level
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize)

    def offer(self, payload: dict[str, Any] | None) -> None:
        """Called on the event loop. A slow client loses old forecasts, never the newest."""
        if self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(payload)


class Series:
    """Runtime state of one series: its committed record, model, pending chunks, listeners."""

    def __init__(self, record: SeriesRecord) -> None:
        self.record = record  # replaced (never mutated) by the committer's publications
        self.lock = threading.Lock()  # guards the model and everything applied to it
        self.model: EpisodicKoopman | None = None
        self.model_incarnation: str | None = None
        self.applied = 0
        self.applied_last_key: TimeKey | None = None
        # The model's newest written snapshot (kept by the snapshot writer and restores).
        self.snapshot_seq = 0
        self.snapshot_bytes = 0
        self.snapshot_at = time.monotonic()
        self.snapshot_queued = False  # a request waits in (or is being served by) the writer
        self.pending: deque[Chunk] = deque()
        self.pending_lock = threading.Lock()
        self.scheduled = False
        self.subscribers: set[Subscriber] = set()  # changed on the event loop only
        self.waiters: list[asyncio.Future[None]] = []  # event loop only
        self.deleted = False
        self.failure: str | None = None
        # Set while the series' drain waits for in-flight pushes (observable, e.g. by tests).
        self.deferring = threading.Event()

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def sid(self) -> int:
        return self.record.sid

    @property
    def current_incarnation(self) -> str:
        return self.record.incarnation

    def caught_up(self) -> bool:
        """Whether the model reflects every acknowledged observation."""
        record = self.record
        return (
            self.model is not None
            and self.model_incarnation == record.incarnation
            and self.applied >= record.count
        )
