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


def _graph_parameters(low: int, high: int, ef_search: int) -> faiss.SearchParametersHNSW:
    """HNSW search parameters selecting labels ``[low, high)``: this thread's own, reused.

    Making them anew cost more than a quarter of a search of 10^4 episodes; a parameter
    object per thread can be updated in place, as no other search reads it.
    """
    cached = getattr(_search_local, "params", None)
    if cached is None:
        selector = faiss.IDSelectorRange(0, 0)
        cached = _search_local.params = (selector, faiss.SearchParametersHNSW(sel=selector))
    selector, params = cached
    selector.imin, selector.imax = low, high
    params.efSearch = ef_search
    return params


def search_graph(
    index: faiss.IndexHNSWSQ,
    query: np.ndarray,
    low: int,
    high: int,
    ef_search: int,
    found: np.ndarray,
    labels: np.ndarray,
) -> None:
    """The best ``found.size`` labels in ``[low, high)`` of an HNSW index, into ``found`` and
    ``labels`` (``-1`` past what the graph finds), best first."""
    params = _graph_parameters(low, high, ef_search)
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


def scan_flat(
    index: faiss.IndexScalarQuantizer,
    query: np.ndarray,
    first: int,
    count: int,
    found: np.ndarray,
    labels: np.ndarray,
) -> None:
    """Into the max-heap ``found``/``labels`` (empty: ``inf`` and ``-1``), the best of labels
    ``[first, first + count)`` of a flat index, labelled from 0 at ``first``, in heap order.

    The scanner FAISS's own flat search runs, given those codes alone: the same
    distances and the same best as a search selecting the range, without checking
    every entry against an id selector (a fifth of the search) or entering an OpenMP
    region.
    """
    scanner = index.sq.select_InvertedListScanner(index.metric_type, None, True, None)
    scanner.list_no = 0  # labels are then the positions scanned
    scanner.set_query(faiss.swig_ptr(query))
    codes = flat_codes(index)[first : first + count]
    scanner.scan_codes(
        count,
        faiss.swig_ptr(codes),
        None,
        faiss.swig_ptr(found),
        faiss.swig_ptr(labels),
        found.shape[0],
    )
