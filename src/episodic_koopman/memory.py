"""Episodic memory: a bounded store of completed episodes with a FAISS index.

Each episode has a fixed-length key, searched by FAISS, and a record of named
arrays kept in preallocated columns. Episode ids are consecutive integers. Slot
``id % capacity`` holds episode ``id``.

Keys are stored once, as FAISS scalar-quantizer codes, and every key is rounded
to its code on entry, so the index, the few keys stored since the last insertion
and a rebuild from the index's own codes all hold the same values. With
``key_bounds`` (the largest magnitude each key coordinate can take, as a model's
key layout knows) the codes are 8 bits per coordinate over ``[-bound, bound]``,
a fixed range that needs no training on data; without, half floats. Keys only
propose candidates: the caller reranks them exactly (see
`episodic_koopman.recall`), so the rounding can change which near-ties are
proposed, never the distances that decide.

Records are whatever the caller stores. A model's own memory holds references
(``holds_copies=False``: origins into the model's history and rows of its fit
table, `episodic_koopman.episode_refs`). A memory shared by several models
(`EpisodicKoopman.new_memory`) holds copies of each episode's windows, because
a model cannot read another's history.

Eviction rule (documented contract): **first in, first out**. When the store
is full, adding an episode evicts the oldest one. Because ids are consecutive,
the live episodes are always the id range ``[oldest_id, next_id)``. Deletion
is therefore *soft*: evicted ids stay in the FAISS index but are filtered out of
every search by an ``IDSelectorRange``. HNSW cannot remove vectors, and even a
flat index removes in O(N), so the index is rebuilt from the live keys once the
dead entries exceed ``rebuild_fraction`` of the live ones.

The index is an ``IndexScalarQuantizer`` (exact scan of the fp16 codes) until
the store holds more than ``hnsw_threshold`` episodes. It is then rebuilt as an
``IndexHNSWSQ``. Ids in the index are consecutive from ``indexed_from``, so an
episode's FAISS label is its id minus that offset and no id map is kept. All
index work runs single-threaded, which also makes HNSW construction
deterministic.

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

from .index_search import flat_codes, search_range
from .key_codec import KeyCodec
from .threads import single_threaded

#: FAISS is brought up to date each time the stored id count reaches a multiple of this;
#: searches scan the ids stored since.
_INDEX_BATCH = 32

#: Bytes (8 per key coordinate) of a block of keys made again at load (`EpisodeMemory.set_state`).
_REBUILD_BLOCK_BYTES = 256 * 1024


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
        self.hnsw_threshold = hnsw_threshold
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.rebuild_fraction = rebuild_fraction
        #: Whether records are self-contained (shareable) rather than references into
        #: one model's history and fit table.
        self.holds_copies = holds_copies
        self.codec = KeyCodec(dim, key_bounds)
        self.next_id = 0
        self._tail = np.zeros((_INDEX_BATCH, dim), dtype=np.float32)  # slot id % _INDEX_BATCH
        self._columns: dict[str, np.ndarray] = {}
        self._slot_count = 0
        self._index = self._new_index(hnsw=False)
        self._hnsw = False
        self._indexed_from = 0  # smallest id present in the FAISS index (its label 0)
        self._indexed_to = 0  # every stored id below this is in the FAISS index
        self.n_rebuilds = 0

    # -- bookkeeping ---------------------------------------------------------------
    def __len__(self) -> int:
        return min(self.next_id, self.capacity)

    @property
    def oldest_id(self) -> int:
        return self.next_id - len(self)

    @property
    def uses_hnsw(self) -> bool:
        return self._hnsw

    @property
    def n_dead_indexed(self) -> int:
        return self.oldest_id - self._indexed_from

    def live_ids(self) -> np.ndarray:
        return np.arange(self.oldest_id, self.next_id, dtype=np.int64)

    def _slots(self, ids: np.ndarray) -> np.ndarray:
        return np.asarray(ids, dtype=np.int64) % self.capacity

    def _new_index(self, hnsw: bool) -> faiss.Index:
        index = self.codec.new_index(self.hnsw_m if hnsw else None)
        if hnsw:
            index.hnsw.efConstruction = self.ef_construction
            index.hnsw.efSearch = self.ef_search
        return index

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

    def _sync_index(self) -> None:
        """Bring FAISS up to date; called exactly when the id count reaches a multiple of
        ``_INDEX_BATCH``.

        Sync points, and so what each insertion or rebuild holds, then depend on the
        count of stored ids alone, never on how adds were grouped. The index (an HNSW
        graph depends on insertion order and grouping) is the same however episodes
        arrive. Searches scan the few ids stored since directly.
        """
        if self.n_dead_indexed > max(64, self.rebuild_fraction * len(self)) or (
            not self._hnsw and len(self) > self.hnsw_threshold
        ):
            self._rebuild()
            return
        ids = np.arange(max(self._indexed_to, self.oldest_id), self.next_id, dtype=np.int64)
        if ids.size and ids[0] != self._indexed_from + self._index.ntotal:
            # Ids skipped by an oversized add_many: labels must stay consecutive.
            self._rebuild()
            return
        with single_threaded():  # HNSW insertion uses OpenMP; one thread is also deterministic
            self._index.add(self._tail[ids % _INDEX_BATCH])
        self._indexed_to = self.next_id

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
        stored = self.codec.round(keys)
        # 8-bit codes clip (the keys as given are checked); float16 ones overflow to inf,
        # and stay NaN or inf (the rounded keys are checked).
        if not np.isfinite(stored if self.codec.bounds is None else keys).all():
            raise ValueError("episode keys must be finite (and within float16 range)")
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
            first = self.next_id % _INDEX_BATCH
            stop = min(n, start + _INDEX_BATCH - first)
            count = stop - start
            self._tail[first : first + count] = stored[start:stop]
            slot = self.next_id % self.capacity
            # The ring's slots are one range unless they wrap around.
            wraps = slot + count > self.capacity
            slots = self._slots(ids[start:stop]) if wraps else slice(slot, slot + count)
            for name, column in columns.items():
                self._columns[name][slots] = column[start:stop]
            self.next_id += count
            if first + count == _INDEX_BATCH:
                self._sync_index()
            start = stop
        return ids

    def rebuild(self) -> None:
        """Rebuild the FAISS index from the live keys (drops evicted entries)."""
        self._rebuild()

    def _rebuild(self) -> None:
        hnsw = len(self) > self.hnsw_threshold
        index = self._new_index(hnsw=hnsw)
        if not (hnsw or self._hnsw):
            # Flat to flat: the live codes, copied as they are (decoding and encoding them
            # again gives the same bytes, at a thousand times the cost).
            codes = flat_codes(self._index)[max(self.oldest_id - self._indexed_from, 0) :]
            if codes.shape[0]:
                index.add_sa_codes(codes)
            # The ids stored since the last sync are in the tail (already rounded: their
            # codes are the ones the index would hold).
            tail = np.arange(max(self._indexed_to, self.oldest_id), self.next_id)
            if tail.size:
                index.add_sa_codes(self.codec.encode(self._tail[tail % _INDEX_BATCH]))
        else:
            keys = self.keys(self.live_ids())  # the index's own codes: rebuilding loses nothing
            with single_threaded():
                if keys.shape[0]:
                    index.add(keys)
        self._index = index
        self._hnsw = hnsw
        self._indexed_from = self.oldest_id
        self._indexed_to = self.next_id
        self.n_rebuilds += 1

    # -- reads ---------------------------------------------------------------------
    def search(self, key: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-``k`` live episodes by L2 on keys: ``(ids, squared distances)``.

        FAISS answers for the indexed episodes and a brute-force scan for the few
        stored since the last batch insertion. A search never changes the index, so
        forecasting cannot alter what later updates do.
        """
        n_live, next_id = len(self), self.next_id
        if n_live == 0 or k < 1:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        query = np.ascontiguousarray(key, dtype=np.float32).reshape(1, self.dim)
        oldest = next_id - n_live
        tail_start = max(self._indexed_to, oldest)
        ids: np.ndarray | None = None
        if tail_start > oldest:
            offset = self._indexed_from
            n_best = min(k, tail_start - oldest)
            found = np.empty(n_best, dtype=np.float32)
            labels = np.empty(n_best, dtype=np.int64)
            low, high = oldest - offset, tail_start - offset  # the live labels
            ef_search = max(self.ef_search, k) if self._hnsw else None
            search_range(self._index, query, low, high, found, labels, ef_search)
            # -1 where a graph finds fewer than asked for, or for a query FAISS cannot
            # rank (not finite in float32).
            if labels.min() < 0:
                keep = labels >= 0
                labels, found = labels[keep], found[keep]
            ids = labels + offset
            d2 = found.astype(np.float64)
        if tail_start < next_id:
            first = tail_start % _INDEX_BATCH
            count = next_id - tail_start
            if first + count <= _INDEX_BATCH:  # stored since the last sync: one slice
                rows = self._tail[first : first + count]
            else:
                rows = self._tail[np.arange(tail_start, next_id) % _INDEX_BATCH]
            diff = rows - query
            tail = np.arange(tail_start, next_id, dtype=np.int64)
            tail_d2 = np.einsum("ij,ij->i", diff, diff).astype(np.float64)
            if ids is None:
                ids, d2 = tail, tail_d2
            else:
                ids, d2 = np.concatenate([ids, tail]), np.concatenate([d2, tail_d2])
        order = np.lexsort((ids, d2))[:k]
        return ids[order], d2[order]

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
        ids = np.asarray(ids, dtype=np.int64).ravel()
        out = np.empty((ids.size, self.dim), dtype=np.float32)
        indexed = ids < self._indexed_to
        if indexed.any():
            labels = ids[indexed] - self._indexed_from
            low, high = int(labels.min()), int(labels.max()) + 1
            block = self._index.reconstruct_n(low, high - low)
            out[indexed] = block[labels - low]
        out[~indexed] = self._tail[ids[~indexed] % _INDEX_BATCH]
        return out

    # -- persistence ---------------------------------------------------------------
    def get_state(self, with_index: bool = True) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON-able metadata and the arrays (columns, unindexed keys, serialised index).

        ``with_index=False`` leaves a flat index out, for an owner that can give the
        keys of the live episodes again at `set_state` (HNSW is always saved: its
        graph depends on its history).
        """
        with_index = with_index or self._hnsw
        meta = {
            "next_id": self.next_id,
            "indexed_from": self._indexed_from,
            "indexed_to": self._indexed_to,
            "n_rebuilds": self.n_rebuilds,
            "holds_copies": self.holds_copies,
            "index_saved": with_index,
            "columns": sorted(self._columns),
        }
        # Only the used slots: how far the columns were grown in advance leaves no trace.
        used = min(self.next_id, self.capacity)
        arrays = {f"col.{name}": column[:used] for name, column in self._columns.items()}
        tail = np.arange(max(self._indexed_to, self.oldest_id), self.next_id)
        arrays["tail_codes"] = self.codec.encode(self._tail[tail % _INDEX_BATCH])
        if self.codec.bounds is not None:
            arrays["key_bounds"] = self.codec.bounds
        if with_index:
            arrays["faiss_index"] = faiss.serialize_index(self._index)
        return meta, arrays

    def set_state(
        self,
        meta: dict[str, Any],
        arrays: dict[str, np.ndarray],
        keys_of: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        """Restore `get_state`; ``keys_of(ids)`` gives live keys when the index was left out."""
        self.next_id = int(meta["next_id"])
        self._indexed_from = int(meta["indexed_from"])
        self._indexed_to = int(meta["indexed_to"])
        self.n_rebuilds = int(meta["n_rebuilds"])
        self.holds_copies = bool(meta["holds_copies"])
        bounds = arrays.get("key_bounds")
        if not self.codec.same_bounds(bounds):  # (a model's own memory has its bounds already)
            self.codec = KeyCodec(self.dim, bounds)
        self._columns = {name: np.array(arrays[f"col.{name}"]) for name in meta["columns"]}
        self._slot_count = min(self.next_id, self.capacity)
        self._tail = np.zeros((_INDEX_BATCH, self.dim), dtype=np.float32)
        tail = np.arange(max(self._indexed_to, self.oldest_id), self.next_id)
        self._tail[tail % _INDEX_BATCH] = self.codec.decode(arrays["tail_codes"])
        if not meta["index_saved"]:
            if keys_of is None:
                raise ValueError("this memory was saved without its index: its keys are needed")
            # The same codes at the same labels. Evicted entries are never returned or
            # read again (searches select live ids only), so zero keys stand in for them.
            # Codes go in as they are: adding keys would encode them a second time.
            self._index = self._new_index(hnsw=False)
            live = np.arange(self.oldest_id, self._indexed_to, dtype=np.int64)
            n_dead = self._indexed_to - self._indexed_from - live.size
            codes = np.empty((n_dead + live.size, self.codec.zero_code.shape[1]), np.uint8)
            codes[:n_dead] = self.codec.zero_code
            # Keys in blocks of a few hundred: thousands at once make every temporary a
            # fresh mapping under the service's fixed mmap threshold (page faults: a
            # fifth of a snapshot's load), and smaller blocks cost more calls than they
            # save. A key is a function of its own episode, so the codes are the same.
            # The index takes them in one call: its buffer is allocated once, to size.
            block = max(1, _REBUILD_BLOCK_BYTES // (8 * self.dim))
            for start in range(0, live.size, block):
                keys = keys_of(live[start : start + block])
                codes[n_dead + start : n_dead + start + keys.shape[0]] = self.codec.encode(keys)
            if codes.shape[0]:
                self._index.add_sa_codes(codes)
            self._hnsw = False
            return
        # deserialize_index returns the concrete class, owning its data (a downcast
        # wrapper would not, and would dangle once the original is collected).
        self._index = faiss.deserialize_index(np.asarray(arrays["faiss_index"], dtype=np.uint8))
        self._hnsw = isinstance(self._index, faiss.IndexHNSWSQ)
        if self._hnsw:
            self._index.hnsw.efSearch = self.ef_search
