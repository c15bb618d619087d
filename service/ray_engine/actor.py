"""A shard actor: the models and the writer of a fixed set of storage shards, in one process.

The database hashes series into ``n_shards`` storage shards (64 by default,
`service.storage.records.shard_of`); actor ``k`` of ``N`` owns the storage shards
``s`` with ``s % N == k``. Inside, it is the single-process service for those
series: a `Registry` of models and a `Committer` that holds the shards' fencing
epochs, wrapped in a `LocalEngine`. So a push commits *in the actor* (the
owner, holding the epoch) and is acknowledged to the HTTP layer only after its
transaction committed and the actor's registry saw it (read-your-writes).

Start-up (also after Ray restarts a dead actor's process) acquires the shards
first, which bumps their epochs: a predecessor that is somehow still running can
no longer write. Only then are the records loaded and the models restored, from
snapshots plus the stored observations, exactly as after a restart of the local
service. Ray must not retry calls into a restarted actor (``max_task_retries=0``):
the HTTP layer answers 503 and the client re-sends, which is idempotent.

Methods never raise `ApiError` across the process boundary: `call` returns it as
a tuple the HTTP layer turns back into the same error.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from episodic_koopman import pin_threads

from ..engine import LocalEngine
from ..errors import ApiError
from ..metrics import Family, Metrics, families
from ..registry import Registry
from ..settings import Settings
from ..storage import Committer, open_storage, owner_name
from ..storage.records import shard_of

log = logging.getLogger("episodic_koopman.service")

#: A stream no client has polled for this long is closed (its HTTP server is gone).
STREAM_IDLE_SECONDS = 60.0


def actor_name(index: int, n_actors: int) -> str:
    return f"shard-{index}-of-{n_actors}"


def owned_shards(index: int, n_actors: int, n_shards: int) -> list[int]:
    """The storage shards actor ``index`` of ``n_actors`` owns."""
    return [shard for shard in range(n_shards) if shard % n_actors == index]


def share(total: int, index: int, n_actors: int) -> int:
    """Actor ``index``'s part of a deployment-wide limit: the parts add up to ``total``."""
    return total // n_actors + (1 if index < total % n_actors else 0)


def actor_of(series_id: str, n_actors: int, n_shards: int) -> int:
    """The actor owning a series: its storage shard, dealt round-robin over the actors."""
    return shard_of(series_id, n_shards) % n_actors


class _Stream:
    """An SSE subscription kept in the actor; the HTTP layer polls it with `stream_next`."""

    def __init__(self, forecasts: AsyncIterator[dict[str, Any]]) -> None:
        # Like `Subscriber`: a slow poller loses old forecasts, never the newest.
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(16)
        self.polled = time.monotonic()
        self.task = asyncio.get_running_loop().create_task(self._pump(forecasts))

    def _offer(self, item: tuple[str, Any]) -> None:
        if self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(item)

    async def _pump(self, forecasts: AsyncIterator[dict[str, Any]]) -> None:
        try:
            async for payload in forecasts:
                self._offer(("forecast", payload))
            self._offer(("end", None))
        except ApiError as exc:
            self._offer(("error", (exc.status, exc.detail, exc.headers)))
        finally:
            await forecasts.aclose()  # type: ignore[attr-defined]


class ShardActor:
    """Runs as a Ray actor (``ray.remote(ShardActor)``); see the module docstring."""

    def __init__(self, settings: dict[str, Any], index: int, n_actors: int) -> None:
        deployment = Settings(**settings)
        self.index, self.n_actors = index, n_actors
        # MAX_SERIES and MAX_APPLY_BACKLOG bound the whole deployment: each actor enforces
        # its share, so the actors together never exceed them (docs/ray.md: limits).
        self.max_series = share(deployment.max_series, index, n_actors)
        self.settings = deployment.model_copy(
            update={"max_apply_backlog": share(deployment.max_apply_backlog, index, n_actors)}
        )
        self.deployment_max_series = deployment.max_series
        # The same process set-up as the local service's (see service.main.running).
        pin_threads()
        sys.setswitchinterval(0.001)
        loop = asyncio.get_running_loop()  # an async actor's __init__ runs on its loop
        storage = open_storage(self.settings)
        storage.initialise()
        self.shards = owned_shards(index, n_actors, storage.n_shards)
        # Fence off every earlier owner of these shards before reading their state.
        epochs = storage.acquire_shards(owner_name(), self.shards)
        session = storage.writer()
        mine = set(self.shards)
        records = {
            series_id: record
            for series_id, record in storage.load_records().items()
            if shard_of(series_id, storage.n_shards) in mine
        }
        self.reader = storage.reader()
        # Snapshots of this actor's shards: in the database when it is PostgreSQL (any node
        # restores them), else in a dir per actor (a registry discards snapshots of series
        # it does not know).
        snapshots = storage.snapshot_store(
            self.settings.snapshot_dir / f"ray-{index}-of-{n_actors}", epochs
        )
        self.metrics = Metrics()
        self.registry = Registry(self.settings, records, self.reader, snapshots, self.metrics, loop)
        self.committer = Committer(
            session,
            records,
            self.registry,
            self.max_series,
            self.settings.model_defaults,
            epochs=epochs,
            n_shards=storage.n_shards,
            commit_spacing=self.settings.commit_spacing_seconds,
            in_flight=lambda: self.registry.applier.pushes_in_flight,
        )
        self.committer.start()
        self.engine = LocalEngine(self.settings, self.registry, self.committer)
        if self.settings.preload:
            self.registry.preload()
        self.streams: dict[int, _Stream] = {}
        self._stream_ids = itertools.count()
        self._periodic = loop.create_task(self._housekeeping())
        log.info(
            "shard actor %d of %d: %d series in %d shards (pid %d)",
            index,
            n_actors,
            len(records),
            len(self.shards),
            os.getpid(),
        )

    async def _housekeeping(self) -> None:
        """Periodic snapshots of changed models, and streams whose poller went away."""
        interval = min(self.settings.snapshot_interval_seconds, STREAM_IDLE_SECONDS / 2)
        last_snapshot = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            if now - last_snapshot >= self.settings.snapshot_interval_seconds:
                self.registry.snapshot_dirty()
                last_snapshot = now
            for stream_id, stream in list(self.streams.items()):
                if now - stream.polled > STREAM_IDLE_SECONDS:
                    await self.stream_close(stream_id)

    # ------------------------------------------------------------------ the engine, remotely
    async def call(self, method: str, *args: Any) -> tuple[Any, ...]:
        """``("ok", result)`` or ``("error", status, detail, headers)``."""
        try:
            if method == "ingest":
                async with self.engine.push_slot():
                    result = await self.engine.ingest(*args)
            else:
                result = await getattr(self.engine, method)(*args)
        except ApiError as exc:
            detail = exc.detail
            if exc.status == 403 and "MAX_SERIES" in detail:
                detail = (
                    f"this series' shard actor ({self.index} of {self.n_actors}) holds its share, "
                    f"{self.max_series}, of the {self.deployment_max_series} series "
                    "EPISODIC_KOOPMAN_MAX_SERIES allows (docs/ray.md: limits); delete one first"
                )
            return ("error", exc.status, detail, exc.headers)
        return ("ok", result)

    async def stream_open(self, series_id: str, horizon: int, level: float | None) -> tuple:
        try:
            forecasts = await self.engine.stream(series_id, horizon, level)
        except ApiError as exc:
            return ("error", exc.status, exc.detail, exc.headers)
        stream_id = next(self._stream_ids)
        self.streams[stream_id] = _Stream(forecasts)
        return ("ok", stream_id)

    async def stream_next(self, stream_id: int, timeout: float) -> tuple[str, Any]:
        """The next ``("forecast", payload)``, ``("end", None)`` (deleted), ``("error", ...)``,
        or ``("idle", None)`` after ``timeout`` seconds."""
        stream = self.streams.get(stream_id)
        if stream is None:
            return ("end", None)
        stream.polled = time.monotonic()
        try:
            item = await asyncio.wait_for(stream.queue.get(), timeout)
        except TimeoutError:
            return ("idle", None)
        finally:
            stream.polled = time.monotonic()
        if item[0] != "forecast":
            await self.stream_close(stream_id)
        return item

    async def stream_close(self, stream_id: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            stream.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stream.task

    # ------------------------------------------------------------------ operations
    async def pid(self) -> int:
        """This actor's process id (tests kill it)."""
        return os.getpid()

    async def run(self, function: Callable[..., Any], *args: Any) -> Any:
        """``function(*args)`` in this actor's process (tests instrument the models where
        they live; whoever holds an actor handle can run code on the cluster anyway)."""
        return function(*args)

    async def model_metrics(self) -> list[Family]:
        """This actor's model metrics (the HTTP layer's ``/metrics`` sums them)."""
        return families(self.metrics.models)

    async def stats(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "pid": os.getpid(),
            "series": len(self.registry.catalog),
            "commits": self.committer.commits,
            "applied": int(self.metrics.applied._value.get()),
            "backlog": self.registry.backlog,
        }

    async def close(self) -> None:
        """Finish the writes and snapshot the models (graceful shutdown)."""
        self._periodic.cancel()
        for stream_id in list(self.streams):
            await self.stream_close(stream_id)
        await asyncio.to_thread(self.committer.stop)
        await asyncio.to_thread(self.registry.close)
        self.reader.close()
