"""Helpers for the storage suite (fixtures live in conftest.py)."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

import numpy as np

from service.ingest import ParsedBatch
from service.storage import Committer, Storage
from service.storage.records import Effect, Ingest, SeriesRecord
from service.timestamps import Spacing, parse_t

#: Bound on waiting for a committed command (the committer works in a thread).
WAIT = 60.0


def numeric(values: list[float], start: int = 0) -> ParsedBatch:
    """A batch with numeric times ``start, start + 1, ...``."""
    return ParsedBatch([parse_t(start + i) for i in range(len(values))], list(values))


def timed(pairs: list[tuple[Any, Any]]) -> ParsedBatch:
    """A batch of ``(t, y)`` pairs (ISO strings or numbers; floats or channel dicts)."""
    return ParsedBatch([parse_t(t) for t, _ in pairs], [y for _, y in pairs])


def append_raw(session: Any, sid: int, start: int, keys: list[Any]) -> None:
    """Store zeros at ``keys`` as observations ``start, ...`` of ``sid``, bypassing the
    committer (what the database itself accepts)."""
    record = SeriesRecord(
        sid=sid,
        id="raw",
        incarnation="0" * 32,
        params={},
        channels=None,
        time_kind="number",
        count=start + len(keys),
        last_key=keys[-1],
        tz=None,
        spacing=Spacing(),
        created_at=0.0,
    )
    session.append_chunk(record, start, keys, np.zeros((len(keys), 1)))


def push(committer: Committer, series_id: str, batch: ParsedBatch) -> Any:
    """Submit an ingest and wait for its outcome (raises what the committer raised)."""
    return committer.submit(Ingest(series_id, batch)).result(timeout=WAIT)


def stored(storage: Storage, series_id: str) -> list[tuple[int, Any, list[float]]]:
    """``(seq, t_key, y values)`` of a series as a fresh handle on the database sees them."""
    record = storage.load_records().get(series_id)
    if record is None:
        return []
    reader = storage.reader()
    try:
        return [
            (seq, key, np.frombuffer(y, dtype=np.float64).tolist())
            for seq, key, y in reader.page(record.sid, 0, 10**9)
        ]
    finally:
        reader.close()


class Recorder:
    """A publisher that records effects, and checks at publication that they are committed.

    The committer must publish after COMMIT and before resolving the futures: a fresh
    connection already sees the rows, and no request has had its answer yet.
    """

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.reader = storage.reader()  # its own connection: sees committed rows only
        self.effects: list[Effect] = []
        self.violations: list[str] = []
        self.pending: list[Future] = []
        self.holding = threading.Event()  # set while a publication is held
        self._release: threading.Event | None = None

    def hold(self) -> threading.Event:
        """Hold the next publication (and so the committer) until the returned event is set."""
        self._release = threading.Event()
        return self._release

    def publish(self, effects: list[Effect]) -> None:
        release, self._release = self._release, None
        if release is not None:
            self.holding.set()
            release.wait(WAIT)
        deleted = {e.series_id for e in effects if e.kind == "delete"}  # later in the group
        for effect in effects:
            if effect.kind == "append" and effect.series_id not in deleted:
                assert effect.record is not None and effect.chunk is not None
                rows = self.reader.page(effect.record.sid, effect.chunk.start, 10**9)
                if len(rows) < effect.chunk.values.shape[0]:
                    self.violations.append(f"{effect.series_id}: published before commit")
        if any(future.done() for future in self.pending):
            self.violations.append("a future resolved before publication")
        self.effects.extend(effects)

    def close(self) -> None:
        self.reader.close()
