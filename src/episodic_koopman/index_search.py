"""Searching a range of labels of a FAISS index of keys, in as few calls as the search needs.

An episode memory's index holds consecutive ids, of which the oldest may be evicted:
a search asks for the best among one range of labels. Only these calls are made
on the hot path (once per scored tick and per forecast), without FAISS's Python
wrappers, whose checks and allocations cost a fifth of a flat search of 10^4 keys.

A flat index is scanned over the range's codes alone (`scan_codes`), with the
scanner FAISS's own search uses: the same distances and the same best, without the
range selector's check of every label (a third of a search of 10^4 keys).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

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

    FAISS's own search with a range selector (a flat index is scanned faster by
    `scan_codes`).
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


#: Per key layout (`KeyCodec.layout`): a quantizer kept for good, and its idle scanners.
#: FAISS hands scanners to Python unowned (owning one crashes), so they are never
#: freed: reused instead, as many as searches ever ran at once with that layout.
_scanners: dict[tuple[object, ...], tuple[faiss.ScalarQuantizer, list[object]]] = {}


def scan_codes(
    codes: np.ndarray,
    layout: tuple[object, ...],
    quantizer: Callable[[], faiss.ScalarQuantizer],
    query: np.ndarray,
    found: np.ndarray,
    labels: np.ndarray,
) -> None:
    """The best ``found.size`` rows of ``codes`` ``(n, code_size)`` (quantised with
    ``layout``, whose quantizer ``quantizer()`` makes) by L2 to ``query``: distances
    into ``found`` and row numbers into ``labels``, in heap order (``-1`` past the rows
    there are, or for a query not finite in float32).

    What a flat index's search with a range selector finds over these rows, without
    the selector: the same scanner, the same floats, ties to the lower row.
    """
    entry = _scanners.get(layout)
    if entry is None:
        entry = _scanners.setdefault(layout, (quantizer(), []))
    sq, idle = entry
    try:
        scanner = idle.pop()  # atomic: each thread takes its own
    except IndexError:
        scanner = sq.select_InvertedListScanner(faiss.METRIC_L2, None, True, None, False)
        scanner.list_no = 0  # with store_pairs, a row's label is (list 0, row)
    try:
        found.fill(np.inf)  # an empty max-heap of the best distances
        labels.fill(-1)
        scanner.set_query(faiss.swig_ptr(query))
        scanner.scan_codes(
            codes.shape[0],
            faiss.swig_ptr(codes),
            None,
            faiss.swig_ptr(found),
            faiss.swig_ptr(labels),
            found.shape[0],
        )
    finally:
        idle.append(scanner)


def flat_codes(index: faiss.IndexScalarQuantizer) -> np.ndarray:
    """A flat index's codes ``(ntotal, code_size)``: a view, valid until the index changes."""
    n_bytes = index.ntotal * index.code_size
    if n_bytes == 0:
        return np.zeros((0, index.code_size), dtype=np.uint8)
    return faiss.rev_swig_ptr(index.codes.data(), n_bytes).reshape(-1, index.code_size)
