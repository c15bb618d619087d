"""Pinning BLAS and OpenMP thread pools to one thread on hot paths.

On small matrices (tens of rows), multi-threaded OpenBLAS and FAISS spend far
longer waking and synchronising threads than computing: on a 2-core machine a
48x288 SVD took 64 ms on two threads and 0.67 ms on one, and a single FAISS
query 15 ms against 46 us. The library therefore runs its linear algebra and
index queries single-threaded.

Two kinds of limit are involved:

* BLAS (OpenBLAS) threads are a process-wide setting. Entering
  ``threadpoolctl.threadpool_limits`` costs about 0.3 ms, more than the work it
  guards, so the controller is created once and reused (about 14 us per entry).
  `pin_threads` lets a long-running process (the service, the CLI, a benchmark)
  pin BLAS once for its whole life.
* OpenMP's thread count (FAISS) is a per-thread setting. `single_threaded`
  therefore sets it in whichever thread enters, which costs well under a
  microsecond, even when BLAS is pinned globally.

A multi-threaded program should call `pin_threads` once: a process-wide BLAS
limit entered and left by several threads at once can be restored too early.
"""

from __future__ import annotations

import contextlib
import threading

import faiss
from threadpoolctl import ThreadpoolController

_controller: ThreadpoolController | None = None
_pinned_globally = False
_local = threading.local()  # per-thread nesting depth of single_threaded()


def _get_controller() -> ThreadpoolController:
    global _controller
    if _controller is None:
        # Created lazily so that it sees every BLAS/OpenMP library loaded by then.
        _controller = ThreadpoolController()
    return _controller


def pin_threads() -> None:
    """Limit BLAS to one thread for the rest of the process, and OpenMP in this thread."""
    global _pinned_globally
    _get_controller().limit(limits=1)
    faiss.omp_set_num_threads(1)
    _pinned_globally = True


class _SingleThreaded:
    """The context manager `single_threaded` returns: one for all threads, its state per
    thread (a class rather than a generator: entered at every scored step and forecast,
    where contextlib's generator machinery cost more than the pinning)."""

    __slots__ = ()

    def __enter__(self) -> None:
        local = _local
        depth = getattr(local, "depth", 0)
        local.depth = depth + 1
        if depth > 0:  # nested: the outermost entry pinned already
            return
        local.previous = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        local.limiter = None
        if not _pinned_globally:
            try:
                local.limiter = _get_controller().limit(limits=1).__enter__()
            except BaseException:
                self.__exit__(None, None, None)
                raise

    def __exit__(self, *exc: object) -> None:
        local = _local
        local.depth -= 1
        if local.depth > 0:
            return
        limiter, local.limiter = local.limiter, None
        try:
            if limiter is not None:
                limiter.__exit__(None, None, None)
        finally:
            faiss.omp_set_num_threads(local.previous)


_SINGLE_THREADED = _SingleThreaded()


def single_threaded() -> contextlib.AbstractContextManager[None]:
    """Run the enclosed block with BLAS and FAISS limited to one thread (re-entrant)."""
    return _SINGLE_THREADED
