"""The application factory: wires settings, storage, models, routes and middleware.

Run it with ``episodic-koopman serve`` (uvicorn, one HTTP process: the models live in
memory, in its child processes, one per core (`service.shard_processes`), or in it).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from episodic_koopman import EpisodicKoopman, __version__, pin_threads

from . import errors
from .api.routes import ROUTERS
from .deps import ServiceState
from .engine import LocalEngine
from .metrics import Metrics
from .middleware import ServiceMiddleware
from .registry import Registry
from .schemas import Observation, ObservationBatch, SeriesConfig
from .settings import Settings
from .shard_processes import running_processes
from .snapshots import pin_malloc_arenas
from .storage import Committer, Storage, open_storage, owner_name

log = logging.getLogger("episodic_koopman.service")


def create_app(settings: Settings | None = None) -> FastAPI:
    """A FastAPI app serving one data dir (settings default to the environment)."""
    settings = settings or Settings()
    # Models in this process update its metrics; shard hosts' are summed at each scrape.
    metrics = Metrics(models=settings.engine != "ray" and not settings.shard_processes)
    state = ServiceState(settings=settings, metrics=metrics)
    state.api_keys = [key.encode() for key in settings.api_key_list]

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with running(state):
            yield

    app = FastAPI(
        title="episodic-koopman",
        version=__version__,
        summary="Push observations; read and stream forecasts that explain themselves.",
        lifespan=lifespan,
        # Served by `api.routes.docs` from local assets (FastAPI's pages load them from CDNs).
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.service = state
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(ServiceMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes)
    app.openapi = lambda: _openapi(app, settings)  # type: ignore[method-assign]
    return app


@contextlib.asynccontextmanager
async def running(state: ServiceState) -> AsyncIterator[None]:
    """Open the storage, start the committer and the models; on exit, stop and snapshot."""
    settings = state.settings
    # Multi-threaded BLAS on small matrices is far slower than one thread (see threads.py).
    pin_threads()
    pin_malloc_arenas(settings.malloc_arenas)  # before the first worker thread exists
    # A GIL hand-off every 1 ms (not 5) keeps the event loop responsive beside model threads.
    sys.setswitchinterval(0.001)
    if not state.api_keys:
        log.warning(
            "EPISODIC_KOOPMAN_API_KEY is not set: the /v1 API is open to anyone who can reach it"
        )
    try:
        EpisodicKoopman.from_flat(settings.model_defaults)
    except (TypeError, ValueError) as exc:
        raise RuntimeError(f"EPISODIC_KOOPMAN_MODEL_DEFAULTS is not valid: {exc}") from None
    if settings.engine == "ray":
        from .ray_engine import check_settings

        check_settings(settings)
    storage = open_storage(settings)
    # An embedded database takes the data dir; a shared one relies on fencing instead.
    lock = await asyncio.to_thread(_lock_data_dir, settings) if storage.embedded else None
    try:
        await asyncio.to_thread(storage.initialise)
        if settings.engine == "ray":
            from .ray_engine import running_ray  # ray is an extra: imported only when used

            async with running_ray(state, storage.n_shards):
                yield
        elif settings.shard_processes:
            n_hosts = min(settings.shard_processes, storage.n_shards)
            async with running_processes(state, storage.n_shards, n_hosts):
                yield
        else:
            async with _running_local(state, storage):
                yield
    finally:
        if lock is not None:
            os.close(lock)


@contextlib.asynccontextmanager
async def _running_local(state: ServiceState, storage: Storage) -> AsyncIterator[None]:
    """This process's models and writer, over every shard."""
    settings = state.settings
    loop = asyncio.get_running_loop()
    # Every shard is ours from now on: any earlier writer is fenced off before we load.
    epochs = await asyncio.to_thread(storage.acquire_shards, owner_name())
    session = await asyncio.to_thread(storage.writer)
    records = await asyncio.to_thread(storage.load_records)
    reader = storage.reader()
    snapshots = await asyncio.to_thread(storage.snapshot_store, settings.snapshot_dir, epochs)
    registry = Registry(settings, records, reader, snapshots, state.metrics, loop)
    committer = Committer(
        session,
        records,
        registry,
        settings.max_series,
        settings.model_defaults,
        epochs=epochs,
        n_shards=storage.n_shards,
        commit_spacing=settings.commit_spacing_seconds,
        in_flight=lambda: registry.applier.pushes_in_flight,
    )
    committer.start()
    state.registry, state.committer = registry, committer
    state.engine = LocalEngine(settings, registry, committer)
    if settings.preload:
        registry.preload()
    log.info("serving %d series from %s", len(records), storage.describe())
    periodic = asyncio.create_task(_snapshot_periodically(registry, settings))
    try:
        yield
    finally:
        periodic.cancel()
        state.engine = state.registry = state.committer = None
        await asyncio.to_thread(committer.stop)
        await asyncio.to_thread(registry.close)
        reader.close()


def _lock_data_dir(settings: Settings) -> int:
    """One server per data dir: two committers would each believe they own the series."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(settings.data_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RuntimeError(f"another server is using {settings.data_dir}") from None
    return fd


async def _snapshot_periodically(registry: Registry, settings: Settings) -> None:
    while True:
        await asyncio.sleep(settings.snapshot_interval_seconds)
        registry.snapshot_dirty()


def _openapi(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """FastAPI's schema, plus the hand-parsed push body and the configured limits."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, summary=app.summary, routes=app.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (Observation, ObservationBatch, SeriesConfig):
        definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(definition.pop("$defs", {}))
        components[model.__name__] = definition
    limits = {"horizon": settings.max_horizon, "limit": settings.max_page_size}
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "query" and parameter["name"] in limits:
                    parameter["schema"]["maximum"] = limits[parameter["name"]]
    app.openapi_schema = schema
    return schema
