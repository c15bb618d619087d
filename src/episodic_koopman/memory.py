"""Episodic memory: a bounded store of completed episodes with a FAISS index.

Each episode has a fixed-length key, searched by FAISS (`episodic_koopman.key_index`),
and a record of named arrays kept in preallocated columns. Episode ids are
consecutive integers. Slot ``id % capacity`` holds episode ``id``.

With ``key_bounds`` (the largest magnitude each key coordinate can take, as a
model's key layout knows) keys are stored as 8 bits per coordinate over ``[-bound,
bound]``, a fixed range that needs no training on data; without, as half floats.

Records are whatever the caller stores. A model's own memory holds references
(``holds_copies=False``: origins into the model's history and rows of its fit
table, `episodic_koopman.episode_refs`). A memory shared by several models
(`EpisodicKoopman.new_memory`) holds copies of each episode's windows, because
a model cannot read another's history.

Eviction rule (documented contract): **first in, first out**. When the store
is full, adding an episode evicts the oldest one. Because ids are consecutive,
the live episodes are always the id range ``[oldest_id, next_id)``. Deletion
is therefore *soft*: evicted ids stay in the FAISS index, skipped by every
search, until the index is rebuilt from the live keys. The index is a flat scan
of the codes until the store holds more than ``hnsw_threshold`` episodes, an HNSW
graph after.

>>> import numpy as np
>>> mem = EpisodeMemory(dim=2, capacity=3)
>>> for i in range(4):
...     _ = mem.add(np.array([i, 0.0]), {"value": np.array([10.0 * i])})
>>> len(mem), mem.oldest_id          # episode 0 was evicted
(3, 1)
>>> ids, _ = mem.search(np.array([0.1, 0.0]), k=2)
>>> ids.tolist()
[1, 2]
>>> mem.get(ids)["value"].ravel().tolist()
[10.0, 20.0]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faiss
import numpy as np

from .key_codec import KeyCodec
from .key_index import KeyIndex
from .state_checks import state_count


class EpisodeMemory:
    """FIFO-bounded episode store with FAISS top-k search over keys."""

    def __init__(
        self,
        dim: int,
        capacity: int = 10_000,
        hnsw_threshold: int = 50_000,
        hnsw_m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 64,
        rebuild_fraction: float = 0.25,
        holds_copies: bool = True,
        key_bounds: np.ndarray | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"memory capacity must be >= 1, got {capacity}")
        self.dim = dim
        self.capacity = capacity
        #: Whether records are self-contained (shareable) rather than references into
        #: one model's history and fit table.
        self.holds_copies = holds_copies
        self.next_id = 0
        self._columns: dict[str, np.ndarray] = {}
        self._slot_count = 0
        self._keys = KeyIndex(
            dim, hnsw_threshold, hnsw_m, ef_construction, ef_search, rebuild_fraction, key_bounds
        )

    # -- bookkeeping ---------------------------------------------------------------
    def __len__(self) -> int:
        return min(self.next_id, self.capacity)

    @property
    def oldest_id(self) -> int:
        return self.next_id - len(self)

    @property
    def codec(self) -> KeyCodec:
        """How keys are rounded to the index's codes."""
        return self._keys.codec

    @property
    def hnsw_threshold(self) -> int:
        """Live episodes past which the index is an HNSW graph."""
        return self._keys.hnsw_threshold

    @property
    def uses_hnsw(self) -> bool:
        return self._keys.hnsw

    @property
    def n_rebuilds(self) -> int:
        return self._keys.n_rebuilds

    @property
    def n_dead_indexed(self) -> int:
        return self.oldest_id - self._keys.indexed_from

    @property
    def n_unindexed(self) -> int:
        """Live episodes stored since FAISS was last brought up to date."""
        return self.next_id - max(self._keys.indexed_to, self.oldest_id)

    @property
    def index(self) -> faiss.Index:
        """The FAISS index (read-only use: the memory keeps it up to date)."""
        return self._keys.index

    def live_ids(self) -> np.ndarray:
        return np.arange(self.oldest_id, self.next_id, dtype=np.int64)

    def _slots(self, ids: np.ndarray) -> np.ndarray:
        return np.asarray(ids, dtype=np.int64) % self.capacity

    def _allocate(self, record: dict[str, np.ndarray], size: int) -> None:
        """Grow the columns to ``size`` slots and add columns new in ``record``."""

        def grown(old: np.ndarray | None, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
            column = np.zeros((size, *shape), dtype=dtype)
            if old is not None:
                column[: old.shape[0]] = old
            return column

        for name, value in record.items():
            value = np.asarray(value)
            self._columns[name] = grown(self._columns.get(name), value.shape, value.dtype)
        for name in set(self._columns) - set(record):
            old = self._columns[name]
            self._columns[name] = grown(old, old.shape[1:], old.dtype)
        self._slot_count = size

    # -- writes --------------------------------------------------------------------
    def add(self, key: np.ndarray, record: dict[str, np.ndarray]) -> int:
        """Store an episode (evicting the oldest when full); returns its id."""
        names = list(record)
        ids = self.add_many(
            np.asarray(key).reshape(1, self.dim),
            {name: np.asarray(record[name])[None] for name in names},
        )
        return int(ids[0])

    def add_many(self, keys: np.ndarray, records: dict[str, np.ndarray]) -> np.ndarray:
        """Store many episodes at once (rows of ``keys`` and of each record column).

        Equivalent to calling `add` row by row: same ids, eviction, index and sync
        points (more rows than ``capacity``: only the newest are kept). Returns the
        ids.
        """
        keys = np.asarray(keys, dtype=np.float32).reshape(-1, self.dim)
        n = keys.shape[0]
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        stored = self._keys.round(keys)  # (checked finite)
        columns = {name: np.asarray(value) for name, value in records.items()}
        if any(column.shape[0] != n for column in columns.values()):
            raise ValueError("every record column needs one row per key")
        if n > self.capacity:  # only the newest `capacity` can survive FIFO eviction
            self.next_id += n - self.capacity
            stored = stored[-self.capacity :]
            columns = {name: column[-self.capacity :] for name, column in columns.items()}
            n = self.capacity
        needed = min(self.next_id + n, self.capacity)
        if self._slot_count < needed or not self._columns.keys() >= columns.keys():
            # Slots grow geometrically up to the capacity; after that the ring is fixed.
            size = max(self._slot_count, min(max(64, 2 * needed), self.capacity))
            self._allocate({name: column[0] for name, column in columns.items()}, size)
        ids = np.arange(self.next_id, self.next_id + n, dtype=np.int64)
        # Store in chunks that end at sync points, exactly as single adds would.
        start = 0
        while start < n:
            first_id = self.next_id
            stop = min(n, start + self._keys.room(first_id))
            count = stop - start
            slot = self.next_id % self.capacity
            # The ring's slots are one range unless they wrap around.
            wraps = slot + count > self.capacity
            slots = self._slots(ids[start:stop]) if wraps else slice(slot, slot + count)
            for name, column in columns.items():
                self._columns[name][slots] = column[start:stop]
            self.next_id += count
            self._keys.store(first_id, stored[start:stop], self.oldest_id, self.next_id)
            start = stop
        return ids

    def rebuild(self) -> None:
        """Rebuild the FAISS index from the live keys (drops evicted entries)."""
        self._keys.rebuild(self.oldest_id, self.next_id)

    # -- reads ---------------------------------------------------------------------
    def search(self, key: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-``k`` live episodes by L2 on keys: ``(ids, squared distances)``.

        A search never changes the index, so forecasting cannot alter what later
        updates do.
        """
        return self._keys.search(key, k, self.oldest_id, self.next_id)

    def exact_search(self, key: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Brute-force top-``k`` by L2 on keys (reference for tests and benchmarks)."""
        ids = self.live_ids()
        if ids.size == 0:
            return ids, np.zeros(0)
        keys = self.keys(ids)
        query = np.asarray(key, dtype=np.float32).reshape(1, self.dim)
        d2 = np.sum((keys - query) ** 2, axis=1, dtype=np.float64)
        order = np.lexsort((ids, d2))[:k]
        return ids[order], d2[order]

    def get(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        """The records of live episodes ``ids``, column by column."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < self.oldest_id or ids.max() >= self.next_id):
            raise KeyError("episode id is not in memory (evicted or never stored)")
        slots = self._slots(ids)
        return {name: column[slots] for name, column in self._columns.items()}

    def value(self, name: str, episode_id: int) -> Any:
        """Column ``name`` of one live episode (``None`` when no episode has that column)."""
        if not self.oldest_id <= episode_id < self.next_id:
            raise KeyError("episode id is not in memory (evicted or never stored)")
        column = self._columns.get(name)
        return None if column is None else column[episode_id % self.capacity]

    def keys(self, ids: np.ndarray) -> np.ndarray:
        """The stored (rounded to their codes) keys of live episodes ``ids``, as float32."""
        return self._keys.keys(ids)

    # -- persistence ---------------------------------------------------------------
    def get_state(self, with_index: bool = True) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON-able metadata and the arrays (columns, unindexed keys, serialised index).

        ``with_index=False`` leaves a flat index out, for an owner that can give the
        keys of the live episodes again at `set_state` (HNSW is always saved: its
        graph depends on its history).
        """
        keys_meta, keys_arrays = self._keys.get_state(with_index, self.oldest_id, self.next_id)
        meta = {
            "next_id": self.next_id,
            "indexed_from": keys_meta["indexed_from"],
            "indexed_to": keys_meta["indexed_to"],
            "n_rebuilds": keys_meta["n_rebuilds"],
            "holds_copies": self.holds_copies,
            "index_saved": keys_meta["index_saved"],
            "columns": sorted(self._columns),
        }
        # Only the used slots: how far the columns were grown in advance leaves no trace.
        used = min(self.next_id, self.capacity)
        arrays = {f"col.{name}": column[:used] for name, column in self._columns.items()}
        return meta, arrays | keys_arrays

    def set_state(
        self,
        meta: dict[str, Any],
        arrays: dict[str, np.ndarray],
        keys_of: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        """Restore `get_state`; ``keys_of(ids)`` gives live keys when the index was left out.

        A state that does not fit (a column not of one row per used slot, ids out of
        order, codes of another size) raises ``ValueError`` and leaves the memory as
        it was: compiled searches index the slots and codes without bounds checks.
        """
        next_id = state_count("EpisodeMemory", "next_id", meta["next_id"])
        used = min(next_id, self.capacity)
        columns = {}
        for name in meta["columns"]:
            key = f"col.{name}"
            if key not in arrays:
                raise ValueError(f"EpisodeMemory: the saved state has no {key!r}")
            column = np.array(arrays[key])
            if column.ndim < 1 or column.shape[0] != used:
                raise ValueError(
                    f"EpisodeMemory: {key!r} must have {used} rows, got shape {column.shape}"
                )
            columns[name] = column
        # The keys' owner may read the columns (``keys_of``), so they go in first; on
        # any error the memory gets its own state back.
        kept = (self.next_id, self.holds_copies, self._columns, self._slot_count)
        self.next_id, self.holds_copies = next_id, bool(meta["holds_copies"])
        self._columns, self._slot_count = columns, used
        try:
            self._keys.set_state(meta, arrays, self.oldest_id, self.next_id, keys_of)
        except BaseException:
            self.next_id, self.holds_copies, self._columns, self._slot_count = kept
            raise
