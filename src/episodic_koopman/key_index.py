"""The keys of an episode memory, searchable: a FAISS index and the few keys stored since.

Keys are stored once, as FAISS scalar-quantizer codes (`episodic_koopman.key_codec`),
and every key is rounded to its code on entry, so the index, the few keys stored
since the last insertion and a rebuild from the index's own codes all hold the same
values. Keys only propose candidates: the caller reranks them exactly (see
`episodic_koopman.rerank`), so the rounding can change which near-ties are proposed,
never the distances that decide.

The memory's ids are consecutive and its live ones the range ``[oldest, next)``
(first in, first out), which every call here is given. FAISS is brought up to date
each time the stored id count reaches a multiple of ``_INDEX_BATCH``; searches scan
the ids stored since directly. Evicted ids stay in the index (HNSW cannot remove
vectors, and even a flat index removes in O(N)) and are skipped by every search;
the index is rebuilt from the live keys once the dead entries exceed
``rebuild_fraction`` of the live ones.

The index is an ``IndexScalarQuantizer`` (exact scan of the codes) until more than
``hnsw_threshold`` episodes are live. It is then rebuilt as an ``IndexHNSWSQ``. Ids
in the index are consecutive from ``indexed_from``, so an id's FAISS label is the id
minus that offset and no id map is kept. All index work runs single-threaded, which
also makes HNSW construction deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faiss
import numpy as np

from .index_search import flat_codes, scan_codes, search_range
from .jit import kernel
from .key_codec import KeyCodec
from .numpy_order import keep_best
from .state_checks import state_array, state_count
from .threads import single_threaded

#: Bytes (8 per key coordinate) of a block of keys made again at load (`KeyIndex.set_state`).
_REBUILD_BLOCK_BYTES = 256 * 1024

#: FAISS is brought up to date each time the stored id count reaches a multiple of this;
#: searches scan the ids stored since.
_INDEX_BATCH = 32


class KeyIndex:
    """The keys of ids ``[oldest, next)`` of a FIFO memory, searchable by L2."""

    def __init__(
        self,
        dim: int,
        hnsw_threshold: int,
        hnsw_m: int,
        ef_construction: int,
        ef_search: int,
        rebuild_fraction: float,
        key_bounds: np.ndarray | None,
    ) -> None:
        self.dim = dim
        self.hnsw_threshold = hnsw_threshold
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.rebuild_fraction = rebuild_fraction
        self.codec = KeyCodec(dim, key_bounds)
        self.tail = np.zeros((_INDEX_BATCH, dim), dtype=np.float32)  # slot id % _INDEX_BATCH
        self.index = self._new_index(hnsw=False)
        self._codes: np.ndarray | None = None  # a flat index's codes (`flat_codes`), or None
        self.hnsw = False
        self.indexed_from = 0  # smallest id present in the FAISS index (its label 0)
        self.indexed_to = 0  # every stored id below this is in the FAISS index
        self.n_rebuilds = 0

    def _new_index(self, hnsw: bool) -> faiss.Index:
        index = self.codec.new_index(self.hnsw_m if hnsw else None)
        if hnsw:
            index.hnsw.efConstruction = self.ef_construction
            index.hnsw.efSearch = self.ef_search
        return index

    # -- writes --------------------------------------------------------------------
    def round(self, keys: np.ndarray) -> np.ndarray:
        """Keys as they will be stored (rounded to their codes), checked finite."""
        stored = self.codec.round(keys)
        # 8-bit codes clip (the keys as given are checked); float16 ones overflow to inf,
        # and stay NaN or inf (the rounded keys are checked).
        if not np.isfinite(stored if self.codec.bounds is None else keys).all():
            raise ValueError("episode keys must be finite (and within float16 range)")
        return stored

    def store(self, first_id: int, stored: np.ndarray, oldest: int, next_id: int) -> None:
        """Keep the rounded keys of ids ``first_id, ...`` (`round`), at most up to the next
        sync point; ``[oldest, next_id)`` are the live ids with them."""
        first = first_id % _INDEX_BATCH
        count = stored.shape[0]
        self.tail[first : first + count] = stored
        if first + count == _INDEX_BATCH:
            self._sync(oldest, next_id)

    @staticmethod
    def room(first_id: int) -> int:
        """How many ids from ``first_id`` on `store` takes in one call."""
        return _INDEX_BATCH - first_id % _INDEX_BATCH

    def _sync(self, oldest: int, next_id: int) -> None:
        """Bring FAISS up to date; called exactly when the id count reaches a multiple of
        ``_INDEX_BATCH``.

        Sync points, and so what each insertion or rebuild holds, then depend on the
        count of stored ids alone, never on how adds were grouped. The index (an HNSW
        graph depends on insertion order and grouping) is the same however episodes
        arrive. Searches scan the few ids stored since directly.
        """
        n_live = next_id - oldest
        n_dead = oldest - self.indexed_from
        if n_dead > max(64, self.rebuild_fraction * n_live) or (
            not self.hnsw and n_live > self.hnsw_threshold
        ):
            self.rebuild(oldest, next_id)
            return
        ids = np.arange(max(self.indexed_to, oldest), next_id, dtype=np.int64)
        if ids.size and ids[0] != self.indexed_from + self.index.ntotal:
            # Ids skipped by an oversized add_many: labels must stay consecutive.
            self.rebuild(oldest, next_id)
            return
        with single_threaded():  # HNSW insertion uses OpenMP; one thread is also deterministic
            self.index.add(self.tail[ids % _INDEX_BATCH])
        self._codes = None  # (the codes may have moved)
        self.indexed_to = next_id

    def rebuild(self, oldest: int, next_id: int) -> None:
        """Rebuild the FAISS index from the live keys (drops evicted entries)."""
        hnsw = next_id - oldest > self.hnsw_threshold
        index = self._new_index(hnsw=hnsw)
        if not (hnsw or self.hnsw):
            # Flat to flat: the live codes, copied as they are (decoding and encoding them
            # again gives the same bytes, at a thousand times the cost).
            codes = flat_codes(self.index)[max(oldest - self.indexed_from, 0) :]
            if codes.shape[0]:
                index.add_sa_codes(codes)
            # The ids stored since the last sync are in the tail (already rounded: their
            # codes are the ones the index would hold).
            tail = np.arange(max(self.indexed_to, oldest), next_id)
            if tail.size:
                index.add_sa_codes(self.codec.encode(self.tail[tail % _INDEX_BATCH]))
        else:
            # The index's own codes: rebuilding loses nothing.
            keys = self.keys(np.arange(oldest, next_id, dtype=np.int64))
            with single_threaded():
                if keys.shape[0]:
                    index.add(keys)
        self.index = index
        self._codes = None
        self.hnsw = hnsw
        self.indexed_from = oldest
        self.indexed_to = next_id
        self.n_rebuilds += 1

    # -- reads ---------------------------------------------------------------------
    def search(
        self, key: np.ndarray, k: int, oldest: int, next_id: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-``k`` of the live ids by L2 on keys: ``(ids, squared distances)``.

        FAISS answers for the indexed ids and a brute-force scan for the few stored
        since the last batch insertion. A search never changes the index, so
        forecasting cannot alter what later updates do.
        """
        if next_id == oldest or k < 1:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        query = np.ascontiguousarray(key, dtype=np.float32).reshape(1, self.dim)
        tail_start = max(self.indexed_to, oldest)
        offset = self.indexed_from
        n_best = min(k, tail_start - oldest)
        found = np.empty(n_best, dtype=np.float32)
        labels = np.empty(n_best, dtype=np.int64)
        if n_best:
            low, high = oldest - offset, tail_start - offset  # the live labels
            if self.hnsw:
                ef_search = max(self.ef_search, k)
                search_range(self.index, query, low, high, found, labels, ef_search)
            else:  # the live codes alone, labelled from `low`
                codes = self._codes
                if codes is None:
                    codes = self._codes = flat_codes(self.index)
                codec = self.codec
                scan_codes(codes[low:high], codec.layout, codec.quantizer, query, found, labels)
                offset += low
        if tail_start < next_id:
            first = tail_start % _INDEX_BATCH
            count = next_id - tail_start
            if first + count <= _INDEX_BATCH:  # stored since the last sync: one slice
                rows = self.tail[first : first + count]
            else:
                rows = self.tail[np.arange(tail_start, next_id) % _INDEX_BATCH]
            diff = rows - query
            tail_d2 = np.einsum("ij,ij->i", diff, diff)
        else:
            tail_d2 = _NO_DISTANCES
        size = min(k, n_best + tail_d2.shape[0])
        ids, d2 = np.empty(size, dtype=np.int64), np.empty(size)
        n_found = _merge_best(found, labels, offset, tail_d2, tail_start, ids, d2)
        return ids[:n_found], d2[:n_found]

    def keys(self, ids: np.ndarray) -> np.ndarray:
        """The stored (rounded to their codes) keys of live ids, as float32."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        out = np.empty((ids.size, self.dim), dtype=np.float32)
        indexed = ids < self.indexed_to
        if indexed.any():
            labels = ids[indexed] - self.indexed_from
            low, high = int(labels.min()), int(labels.max()) + 1
            block = self.index.reconstruct_n(low, high - low)
            out[indexed] = block[labels - low]
        out[~indexed] = self.tail[ids[~indexed] % _INDEX_BATCH]
        return out

    # -- persistence ---------------------------------------------------------------
    def get_state(
        self, with_index: bool, oldest: int, next_id: int
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The metadata and arrays of `EpisodeMemory.get_state` that are the index's."""
        with_index = with_index or self.hnsw
        meta = {
            "indexed_from": self.indexed_from,
            "indexed_to": self.indexed_to,
            "n_rebuilds": self.n_rebuilds,
            "index_saved": with_index,
        }
        tail = np.arange(max(self.indexed_to, oldest), next_id)
        arrays = {"tail_codes": self.codec.encode(self.tail[tail % _INDEX_BATCH])}
        if self.codec.bounds is not None:
            arrays["key_bounds"] = self.codec.bounds
        if with_index:
            arrays["faiss_index"] = faiss.serialize_index(self.index)
        return meta, arrays

    def set_state(
        self,
        meta: dict[str, Any],
        arrays: dict[str, np.ndarray],
        oldest: int,
        next_id: int,
        keys_of: Callable[[np.ndarray], np.ndarray] | None,
    ) -> None:
        """Restore `get_state`; ``keys_of(ids)`` gives live keys when the index was left out.

        The ids and codes are checked before anything is assigned (``ValueError``, the
        index unchanged): the compiled search maps labels to ids by them.
        """
        owner = "KeyIndex"
        indexed_to = state_count(owner, "indexed_to", meta["indexed_to"], 0, next_id)
        indexed_from = state_count(owner, "indexed_from", meta["indexed_from"], 0, indexed_to)
        n_rebuilds = state_count(owner, "n_rebuilds", meta["n_rebuilds"])
        if indexed_from > oldest and oldest < indexed_to:
            raise ValueError(
                f"{owner}: 'indexed_from' {indexed_from} is past the oldest id {oldest}"
            )
        if next_id - max(indexed_to, oldest) > _INDEX_BATCH:
            raise ValueError(f"{owner}: more than {_INDEX_BATCH} ids after 'indexed_to'")
        if not meta["index_saved"] and keys_of is None:
            raise ValueError("this memory was saved without its index: its keys are needed")
        bounds = arrays.get("key_bounds")
        codec = self.codec
        if not codec.same_bounds(bounds):  # (a model's own memory has its bounds already)
            codec = KeyCodec(self.dim, bounds)
        tail = np.arange(max(indexed_to, oldest), next_id)
        code_size = codec.zero_code.shape[1]
        codes = state_array(owner, arrays, "tail_codes", (tail.size, code_size), np.uint8)
        index = None
        if meta["index_saved"]:
            if "faiss_index" not in arrays:
                raise ValueError(f"{owner}: the saved state has no 'faiss_index'")
            # deserialize_index returns the concrete class, owning its data (a downcast
            # wrapper would not, and would dangle once the original is collected).
            try:
                index = faiss.deserialize_index(np.asarray(arrays["faiss_index"], dtype=np.uint8))
            except RuntimeError as error:
                raise ValueError(f"{owner}: 'faiss_index' is not readable: {error}") from None
            if index.ntotal != indexed_to - indexed_from or index.d != self.dim:
                raise ValueError(
                    f"{owner}: 'faiss_index' holds {index.ntotal} keys of dimension {index.d};"
                    f" expected {indexed_to - indexed_from} of dimension {self.dim}"
                )
        self.indexed_from, self.indexed_to, self.n_rebuilds = indexed_from, indexed_to, n_rebuilds
        self.codec = codec
        self.tail = np.zeros((_INDEX_BATCH, self.dim), dtype=np.float32)
        self.tail[tail % _INDEX_BATCH] = codec.decode(codes)
        self._codes = None
        if index is None:
            assert keys_of is not None
            # The same codes at the same labels. Evicted entries are never returned or
            # read again (searches select live ids only), so zero keys stand in for them.
            # Codes go in as they are: adding keys would encode them a second time.
            self.index = self._new_index(hnsw=False)
            live = np.arange(oldest, self.indexed_to, dtype=np.int64)
            n_dead = self.indexed_to - self.indexed_from - live.size
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
                self.index.add_sa_codes(codes)
            self.hnsw = False
            return
        self.index = index
        self.hnsw = isinstance(self.index, faiss.IndexHNSWSQ)
        if self.hnsw:
            self.index.hnsw.efSearch = self.ef_search


_NO_DISTANCES = np.zeros(0, dtype=np.float32)


@kernel
def _merge_best(
    found: np.ndarray,
    labels: np.ndarray,
    offset: int,
    tail_d2: np.ndarray,
    tail_start: int,
    ids: np.ndarray,
    d2: np.ndarray,
) -> int:
    """The best ``ids.size`` of the index's answer (``labels`` from ``offset``; ``-1`` where
    a graph found fewer, or for a query FAISS cannot rank) and the tail's (ids from
    ``tail_start``), by distance then id, into ``ids`` and ``d2`` (as float64); returns
    how many there are."""
    count = 0
    rows = np.empty(ids.shape[0], dtype=np.int64)
    for i in range(found.shape[0]):
        if labels[i] >= 0:
            count = keep_best(np.float64(found[i]), labels[i] + offset, i, d2, ids, rows, count)
    for i in range(tail_d2.shape[0]):
        count = keep_best(np.float64(tail_d2[i]), tail_start + i, i, d2, ids, rows, count)
    return count
