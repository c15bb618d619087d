"""The storage interface: what a backend (SQLite, PostgreSQL) provides to the service.

A backend has three parts:

* `Storage`: opens the database, creates its schema, loads the committed series
  records, hands out shard ownership (fencing) and makes the other two parts;
* `Reader`: read-only queries from any thread (replay, times, pages);
* `WriteSession`: the one write connection the `service.storage.committer.Committer`
  drives. It exposes transactions, savepoints and the handful of writes the
  commands need, so that the committer's rules (group commit, idempotency on
  ``(series, t)``, 409s, fencing, acknowledgement after commit) are written once
  and are the same for every backend.

**Fencing.** Series are hashed into ``n_shards`` shards (`records.shard_of`); the
``shard_owner`` table names each shard's owner and an epoch that every acquisition
bumps. A writer remembers the epoch it got; each write transaction reads (and, in
PostgreSQL, share-locks) the current epochs of the shards it touches before writing,
and a command whose shard has moved on fails with `StaleOwner` and writes nothing.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ApiError
from ..snapshots import FileSnapshotStore, SnapshotStore
from ..timestamps import TimeKey
from . import chunks
from .chunks import StoredChunk
from .records import SeriesRecord

#: Shards of a new database (stored in it: the database's own number wins afterwards).
DEFAULT_SHARDS = 64


class StaleOwner(ApiError):
    """A write for a shard whose ownership epoch has moved past the writer's."""

    def __init__(self, shard: int, held: int | None, current: int | None) -> None:
        if held is None:
            message = f"this server does not own shard {shard} (its epoch is {current})"
        else:
            message = (
                f"this server no longer owns shard {shard}: it holds epoch {held}, "
                f"the shard is at epoch {current}"
            )
        super().__init__(503, message, {"Retry-After": "1"})
        self.shard, self.held, self.current = shard, held, current


class Reader(abc.ABC):
    """Read-only queries of committed observations, from any thread."""

    @abc.abstractmethod
    def fetch_chunks(
        self, sid: int, seq: int, max_chunks: int, values: bool = True
    ) -> list[StoredChunk]:
        """The stored chunks of ``sid`` in order, from the one holding ``seq`` (or the last
        one before it), at most ``max_chunks``; without their values (an empty ``y``)
        unless ``values`` (`service.storage.chunks`)."""

    def page(self, sid: int, offset: int, limit: int) -> list[tuple[int, TimeKey, bytes]]:
        """``(seq, t_key, y bytes)`` of observations ``seq >= offset``, in order, at most
        ``limit``."""
        return chunks.page(self.fetch_chunks, sid, offset, limit)

    def observation_blocks(
        self, sid: int, start: int, block: int = 8192
    ) -> Iterator[tuple[np.ndarray, list[Any]]]:
        """Values ``(n, c)`` and time keys of observations ``seq >= start``, in blocks, in order."""
        return chunks.blocks(self.fetch_chunks, sid, start, block)

    def times(self, sid: int, seqs: list[int]) -> dict[int, TimeKey]:
        """The time keys of the given observation indices (missing ones are left out)."""
        return chunks.times(self.fetch_chunks, sid, seqs)

    @abc.abstractmethod
    def close(self) -> None: ...


class WriteSession(abc.ABC):
    """One write connection, used by the committer thread only."""

    #: Exceptions that mean the database failed (not that a command was invalid).
    errors: tuple[type[BaseException], ...] = ()

    @abc.abstractmethod
    def start(self) -> None:
        """Begin background maintenance, if the backend has any."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def healthy(self) -> bool:
        """Whether the session can go on after a failed transaction."""
        return True

    # -- transactions
    @abc.abstractmethod
    def begin(self) -> None:
        """Start a write transaction (serialised against other writers of the same series)."""

    @abc.abstractmethod
    def commit(self) -> None: ...

    @abc.abstractmethod
    def rollback(self) -> None: ...

    @abc.abstractmethod
    def savepoint(self) -> None: ...

    @abc.abstractmethod
    def rollback_savepoint(self) -> None:
        """Undo everything since `savepoint` and drop it."""

    @abc.abstractmethod
    def release_savepoint(self) -> None: ...

    # -- inside a transaction
    @abc.abstractmethod
    def shard_epochs(self, shards: Iterable[int]) -> dict[int, int]:
        """Current epochs of these shards, held stable until the transaction ends."""

    @abc.abstractmethod
    def insert_series(
        self, series_id: str, incarnation: str, params: str, created_at: float
    ) -> int:
        """Insert a new series and return its ``sid`` (never reused)."""

    @abc.abstractmethod
    def update_params(self, sid: int, params: str, incarnation: str) -> None: ...

    @abc.abstractmethod
    def delete_series(self, sid: int) -> None:
        """Remove a series and its observations."""

    @abc.abstractmethod
    def fetch_chunks(
        self, sid: int, seq: int, max_chunks: int, values: bool = True
    ) -> list[StoredChunk]:
        """As `Reader.fetch_chunks`, inside this session's transaction (it sees its own
        uncommitted chunks)."""

    def stored_values(
        self, sid: int, count: int, low: TimeKey, high: TimeKey
    ) -> dict[TimeKey, bytes]:
        """Stored ``t_key -> y bytes`` of a series of ``count`` observations with
        ``low <= t_key <= high``."""
        return chunks.values_between(self.fetch_chunks, sid, count, low, high)

    def append_chunk(
        self, record: SeriesRecord, start: int, keys: list[TimeKey], values: np.ndarray
    ) -> None:
        """Store observations ``start, start + 1, ...`` (keys increasing, values ``(n, c)``)
        with ``record``, the series' state after them (its count, last key, zone and
        spacing; its channels and time kind too when ``start`` is 0).

        They become chunks of at most `chunks.MAX_CHUNK`; the last one carries the state.
        The database refuses a chunk that does not extend the series: ``start`` must be
        the stored count and ``keys[0]`` above the stored last key."""
        n = len(keys)
        for at in range(0, n, chunks.MAX_CHUNK):
            end = min(at + chunks.MAX_CHUNK, n)
            state = record if end == n else None
            self.insert_chunk(record.sid, start + at, keys[at:end], values[at:end], state)
        if start == 0:  # the series' first observations fix its layout
            self.set_layout(record)

    @abc.abstractmethod
    def insert_chunk(
        self,
        sid: int,
        start: int,
        keys: list[TimeKey],
        values: np.ndarray,
        state: SeriesRecord | None,
    ) -> None:
        """Insert one chunk; ``state`` (zone, spacing) only in a series' newest chunk."""

    @abc.abstractmethod
    def set_layout(self, record: SeriesRecord) -> None:
        """Store a series' channels and time kind (fixed by its first observations)."""


def check_schema_version(meta: dict[str, str], supported: int, where: str) -> None:
    """Refuse a database whose stored schema is newer than ``supported`` (a newer server's)."""
    version = meta.get("schema_version")
    if version is not None and int(version) > supported:
        raise RuntimeError(
            f"{where} has schema version {version}; this server reads up to {supported}"
        )


class Storage(abc.ABC):
    """A database the service keeps its series and observations in."""

    #: Whether two servers on the same data dir would corrupt each other (an embedded
    #: database); a server database relies on fencing instead.
    embedded: bool = False

    @property
    @abc.abstractmethod
    def n_shards(self) -> int:
        """The database's shard count (set when it was created)."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Where the data is, for logs (no password)."""

    @abc.abstractmethod
    def initialise(self) -> None:
        """Create the schema if needed; refuse a database newer than this code."""

    @abc.abstractmethod
    def load_records(self) -> dict[str, SeriesRecord]: ...

    @abc.abstractmethod
    def acquire_shards(self, owner: str, shards: Iterable[int] | None = None) -> dict[int, int]:
        """Take ownership of shards (all by default) by bumping their epochs.

        Returns the new epochs: a writer holding them fences off every earlier owner, whose
        later write transactions on these shards fail with `StaleOwner`.
        """

    @abc.abstractmethod
    def owners(self) -> dict[int, tuple[str, int]]:
        """Each owned shard's ``(owner, epoch)``."""

    @abc.abstractmethod
    def reader(self) -> Reader: ...

    @abc.abstractmethod
    def writer(self) -> WriteSession: ...

    def snapshot_store(self, directory: Path, epochs: dict[int, int]) -> SnapshotStore:
        """Where this server keeps its models' snapshots, for the shards it holds with
        ``epochs``: files in ``directory`` unless the backend keeps them (it is shared)."""
        return FileSnapshotStore(directory)
