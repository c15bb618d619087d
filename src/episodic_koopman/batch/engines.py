"""Engines that run the batch's tasks: local processes, or a Dask distributed cluster.

Both yield ``(task index, result)`` as tasks finish; the caller puts results back in
input order, so the outcome never depends on the engine or the number of jobs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from ..threads import single_threaded
from .errors import BatchInputError

ENGINES = ("local", "dask")

_pinned = False


def _ensure_pinned() -> None:
    """Pin BLAS/OpenMP to one thread, once per worker process."""
    global _pinned
    if not _pinned:
        from ..threads import pin_threads

        pin_threads()
        _pinned = True


def local_map(
    fn: Callable[..., Any], tasks: list[tuple[Any, ...]], jobs: int
) -> Iterator[tuple[int, Any]]:
    """``(task index, result)`` as tasks finish, in ``jobs`` processes (or here)."""
    if jobs <= 1:
        # In the caller's process: limit threads for the run only, not for good.
        with single_threaded():
            for i, args in enumerate(tasks):
                yield i, fn(*args)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn, not fork: forking a process that has started OpenMP or BLAS threads can hang.
    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(_apply, fn, list(args)): i for i, args in enumerate(tasks)}
        for future in as_completed(futures):
            yield futures[future], future.result()


def dask_map(
    fn: Callable[..., Any],
    tasks: list[tuple[Any, ...]],
    jobs: int,
    scheduler: str | None,
    timeout: float,
    info: dict[str, Any],
) -> Iterator[tuple[int, Any]]:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise BatchInputError(
            "the dask engine needs the batch extra: pip install 'episodic-koopman[batch]'"
        ) from None
    cluster = None
    try:
        if scheduler is None:
            cluster = LocalCluster(
                n_workers=max(1, jobs),
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",  # any free port: never clash with a running cluster
                silence_logs=40,  # logging.ERROR
            )
            client = Client(cluster)
        else:
            client = Client(scheduler, timeout=timeout)
    except OSError as exc:
        if cluster is not None:
            cluster.close()
        raise BatchInputError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    try:
        info["workers"] = len(client.scheduler_info()["workers"])
        # Scatter the data first: each task then ships a small reference, not its series.
        payloads = client.scatter([list(args) for args in tasks])
        futures = [
            client.submit(_apply, fn, payload, key=f"ek-batch-{i}-{time.time_ns()}")
            for i, payload in enumerate(payloads)
        ]
        index = {f.key: i for i, f in enumerate(futures)}
        for future in as_completed(futures):
            yield index[future.key], future.result()
            future.release()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _apply(fn: Callable[..., Any], args: list[Any]) -> Any:
    """Run a task in a worker process, whose threads are pinned once and for all."""
    _ensure_pinned()
    return fn(*args)
