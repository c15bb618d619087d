"""The Ray engine (``serve --engine ray``): shard actors own the models and the writes.

See docs/ray.md. `running_ray` is the HTTP server's lifespan under Ray: it starts or
joins Ray, gets or creates the shard actors, and serves through a `RayEngine`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from ..deps import ServiceState
from .actor import ShardActor, actor_name, actor_of, owned_shards
from .engine import RayEngine, check_settings, is_local_address, start_ray, stop_ray

__all__ = [
    "RayEngine",
    "ShardActor",
    "actor_name",
    "actor_of",
    "check_settings",
    "is_local_address",
    "owned_shards",
    "running_ray",
]

log = logging.getLogger("episodic_koopman.service")


@contextlib.asynccontextmanager
async def running_ray(state: ServiceState, n_shards: int) -> AsyncIterator[None]:
    settings = state.settings
    try:
        import ray  # noqa: F401
    except ImportError:
        raise RuntimeError("--engine ray needs Ray: pip install 'episodic-koopman[ray]'") from None
    actors, owned, started = await asyncio.to_thread(start_ray, settings, n_shards)
    state.engine = RayEngine(settings, actors, n_shards, state.metrics)
    log.info("serving through %d shard actors on Ray", len(actors))
    try:
        yield
    finally:
        state.engine = None
        timeout = settings.shutdown_snapshot_seconds + 10
        await asyncio.to_thread(stop_ray, actors, owned, started, timeout)
