"""Pinning BLAS and OpenMP thread pools to one thread on hot paths.

On small matrices (tens of rows), multi-threaded OpenBLAS and FAISS spend far
longer waking and synchronising threads than computing: on a 2-core machine a
48x288 SVD took 64 ms on two threads and 0.67 ms on one, and a single FAISS
query 15 ms against 46 us. The library therefore runs its linear algebra and
index queries single-threaded.

Entering ``threadpoolctl.threadpool_limits`` costs about 0.3 ms, more than the
work it guards, so the controller is created once and reused (about 14 us per
entry), and `pin_threads` lets a long-running process (the service, the CLI, a
benchmark) pin once for its whole life, after which `single_threaded` is free.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import faiss
from threadpoolctl import ThreadpoolController

_controller: ThreadpoolController | None = None
_pinned_globally = False
_depth = 0  # nesting depth of single_threaded(); inner entries are free


def _get_controller() -> ThreadpoolController:
    global _controller
    if _controller is None:
        # Created lazily so that it sees every BLAS/OpenMP library loaded by then.
        _controller = ThreadpoolController()
    return _controller


def pin_threads() -> None:
    """Limit BLAS and OpenMP (FAISS) to one thread for the rest of the process."""
    global _pinned_globally
    _get_controller().limit(limits=1)
    faiss.omp_set_num_threads(1)
    _pinned_globally = True


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run the enclosed block with BLAS and FAISS limited to one thread (re-entrant)."""
    global _depth
    if _pinned_globally or _depth > 0:
        yield
        return
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    _depth += 1
    try:
        with _get_controller().limit(limits=1):
            yield
    finally:
        _depth -= 1
        faiss.omp_set_num_threads(previous)
