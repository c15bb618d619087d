"""Searching a range of labels of a FAISS index of keys, in as few calls as the search needs.

An episode memory's index holds consecutive ids, of which the oldest may be evicted:
a search asks for the best among one range of labels. Only these calls are made
on the hot path (once per scored tick and per forecast), without FAISS's Python
wrappers, whose checks and allocations cost a fifth of a flat search of 10^4 keys.
"""

from __future__ import annotations

import threading

import faiss
import numpy as np

from .threads import single_threaded

_search_local = threading.local()


def _range_parameters(graph: bool, low: int, high: int, ef_search: int) -> faiss.SearchParameters:
    """Search parameters selecting labels ``[low, high)`` (HNSW's with ``ef_search`` for a
    graph): this thread's own, reused.

    Making them anew cost more than a quarter of a search of 10^4 episodes; a parameter
    object per thread can be updated in place, as no other search reads it.
    """
    cached = getattr(_search_local, "graph" if graph else "flat", None)
    if cached is None:
        selector = faiss.IDSelectorRange(0, 0)
        kind = faiss.SearchParametersHNSW if graph else faiss.SearchParameters
        cached = (selector, kind(sel=selector))
        setattr(_search_local, "graph" if graph else "flat", cached)
    selector, params = cached
    selector.imin, selector.imax = low, high
    if graph:
        params.efSearch = ef_search
    return params


def search_range(
    index: faiss.Index,
    query: np.ndarray,
    low: int,
    high: int,
    found: np.ndarray,
    labels: np.ndarray,
    ef_search: int | None = None,
) -> None:
    """The best ``found.size`` labels in ``[low, high)`` of a flat index, or of an HNSW
    graph searched with ``ef_search``, into ``found`` and ``labels``, best first (``-1``
    past what a graph finds).

    FAISS's own search with a range selector. (Its inverted-list scanner over a flat
    index's live codes alone was a quarter faster, but each scanner FAISS makes is
    handed to Python unowned, and owning it crashes: a search leaked about 460 bytes.)
    """
    params = _range_parameters(ef_search is not None, low, high, ef_search or 0)
    with single_threaded():  # HNSW search uses OpenMP
        index.search_c(
            1,
            faiss.swig_ptr(query),
            found.shape[0],
            faiss.swig_ptr(found),
            faiss.swig_ptr(labels),
            params,
        )


def flat_codes(index: faiss.IndexScalarQuantizer) -> np.ndarray:
    """A flat index's codes ``(ntotal, code_size)``: a view, valid until the index changes."""
    n_bytes = index.ntotal * index.code_size
    if n_bytes == 0:
        return np.zeros((0, index.code_size), dtype=np.uint8)
    return faiss.rev_swig_ptr(index.codes.data(), n_bytes).reshape(-1, index.code_size)
