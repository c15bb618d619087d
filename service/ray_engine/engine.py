"""The HTTP layer's side of the Ray engine: route each call to the shard actor that owns it.

`start_ray` connects to (or starts) Ray and gets or creates the named shard actors;
`RayEngine` implements `service.engine.Engine` by forwarding to them. A call that
finds its actor dead (killed, its node lost) is answered 503 with ``Retry-After``:
Ray restarts the actor, which restores its series, and the client's retry of a
push is idempotent, so an acknowledged observation is never lost and none is
applied twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from ..errors import ApiError
from ..ingest import ParsedBatch
from ..metrics import Metrics
from ..settings import Settings
from .actor import ShardActor, actor_name, actor_of

log = logging.getLogger("episodic_koopman.service")

#: How long one `stream_next` poll waits in the actor (well under its idle cut-off).
STREAM_POLL_SECONDS = 10.0
#: A scrape of ``/metrics`` waits this long for an actor, then shows its last values.
METRICS_TIMEOUT_SECONDS = 5.0


def is_local_address(address: str) -> bool:
    """Whether a ``--ray-address`` means this machine only (then SQLite is allowed)."""
    return address in ("", "local")


def check_settings(settings: Settings) -> None:
    """Refuse what cannot work: SQLite is one machine's file, not a cluster's store."""
    if not is_local_address(settings.ray_address) and not settings.database:
        raise RuntimeError(
            f"--ray-address {settings.ray_address} may place shard actors on other machines, "
            "which cannot share a SQLite file: pass --database postgresql://... "
            "(or EPISODIC_KOOPMAN_DATABASE)"
        )


def start_ray(settings: Settings, n_shards: int) -> tuple[list[Any], bool, bool]:
    """Connect to Ray (a local one when no address is given); get or create the actors.

    Returns the actor handles, whether they are this server's own (a local Ray's actors
    die with it; a cluster's are shared by its HTTP servers) and whether it started Ray.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray nices its workers (15) as batch jobs; here they are the service itself.
    os.environ.setdefault("RAY_worker_niceness", "0")
    import ray

    local = is_local_address(settings.ray_address)
    started = not ray.is_initialized()  # tests start Ray once and share it
    if started:
        if local:
            ray.init(
                num_cpus=os.cpu_count(),
                include_dashboard=False,
                namespace=settings.ray_namespace,
                logging_level="WARNING",
                log_to_driver=True,
            )
        else:
            ray.init(
                address=settings.ray_address,
                namespace=settings.ray_namespace,
                logging_level="WARNING",
            )
    # One per CPU by default, but never more than the storage shards (an actor owns whole ones).
    n_actors = settings.shards or min(int(ray.cluster_resources().get("CPU", 0)), n_shards)
    if n_actors < 1:
        raise RuntimeError("the Ray cluster has no CPUs yet: pass --shards N (docs/ray.md)")
    if n_actors > n_shards:
        # An actor owns whole storage shards: past their number, actors would own nothing.
        raise RuntimeError(
            f"--shards {n_actors} exceeds the database's {n_shards} storage shards "
            "(docs/ray.md: sizing)"
        )
    # One core per actor when there are enough (Ray then spreads them over the nodes);
    # a share of one otherwise, so that every actor is placed.
    cpus = min(1.0, int(100 * ray.cluster_resources().get("CPU", 1) / n_actors) / 100) or 0.01
    remote = ray.remote(ShardActor)
    env = {"env_vars": {"RAY_USAGE_STATS_ENABLED": "0"}}
    actors = []
    for index in range(n_actors):
        options: dict[str, Any] = {
            "name": actor_name(index, n_actors),
            "namespace": settings.ray_namespace,
            "get_if_exists": True,
            "max_restarts": settings.ray_max_restarts,
            "max_task_retries": 0,  # a push may have committed: the client retries, not Ray
            "max_concurrency": 1000,
            "num_cpus": cpus,
            "runtime_env": env,
        }
        if not local:
            # Shared by every HTTP server of the cluster: they outlive any one of them.
            options["lifetime"] = "detached"
        actors.append(remote.options(**options).remote(settings.model_dump(), index, n_actors))
    ray.get([actor.pid.remote() for actor in actors])  # constructed (restored or failed)
    return actors, local, started


def stop_ray(actors: list[Any], owned: bool, started: bool, timeout: float) -> None:
    """Close our own actors gracefully (writes finished, models snapshotted), then Ray."""
    import ray

    if owned:
        with contextlib.suppress(Exception):
            ray.get([actor.close.remote() for actor in actors], timeout=timeout)
        for actor in actors:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
    if started:
        ray.shutdown()


def _raise(reply: tuple[Any, ...]) -> Any:
    if reply[0] == "ok":
        return reply[1]
    _, status, detail, headers = reply
    raise ApiError(status, detail, headers)


class RayEngine:
    """`service.engine.Engine` over named shard actors (calls go to the series' owner)."""

    def __init__(
        self, settings: Settings, actors: list[Any], n_shards: int, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.actors = actors
        self.n_shards = n_shards
        self.metrics = metrics
        self.streams = 0  # open SSE streams of this server (MAX_STREAMS, as a local server's)

    def index(self, series_id: str) -> int:
        return actor_of(series_id, len(self.actors), self.n_shards)

    async def _await(self, index: int, ref: Any) -> Any:
        import ray.exceptions

        try:
            return await ref
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
            raise ApiError(
                503,
                f"shard actor {index} is restarting; retry (writes are idempotent on (series, t))",
                {"Retry-After": "1"},
            ) from None

    async def _call(self, series_id: str, method: str, *args: Any) -> Any:
        index = self.index(series_id)
        reply = await self._await(index, self.actors[index].call.remote(method, series_id, *args))
        return _raise(reply)

    async def _everywhere(self, method: str, *args: Any) -> list[Any]:
        replies = await asyncio.gather(
            *(
                self._await(i, actor.call.remote(method, *args))
                for i, actor in enumerate(self.actors)
            )
        )
        return [_raise(reply) for reply in replies]

    # ------------------------------------------------------------------ writes
    @contextlib.asynccontextmanager
    async def push_slot(self) -> AsyncIterator[None]:
        yield  # admission (the apply backlog) is decided by the owning actor

    async def ingest(self, series_id: str, batch: ParsedBatch) -> dict[str, Any]:
        return await self._call(series_id, "ingest", batch)

    async def configure(self, series_id: str, params: dict[str, Any]) -> tuple[dict, bool]:
        payload, created = await self._call(series_id, "configure", params)
        return payload, created

    async def delete(self, series_id: str) -> bool:
        return await self._call(series_id, "delete")

    # ------------------------------------------------------------------ reads
    async def info(self, series_id: str) -> dict[str, Any]:
        return await self._call(series_id, "info")

    async def forecast(self, series_id: str, horizon: int, level: float | None) -> dict:
        return await self._call(series_id, "forecast", horizon, level)

    async def episodes(self, series_id: str, offset: int, limit: int) -> dict[str, Any]:
        return await self._call(series_id, "episodes", offset, limit)

    async def observations(self, series_id: str, offset: int, limit: int) -> dict[str, Any]:
        return await self._call(series_id, "observations", offset, limit)

    async def _merged_page(self, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """The page ``[offset, offset + limit)`` of every actor's series, by id."""
        pages = await self._everywhere("list_series", 0, offset + limit)
        items = sorted((item for page in pages for item in page["items"]), key=lambda i: i["id"])
        return items[offset : offset + limit], sum(page["total"] for page in pages)

    async def list_series(self, offset: int, limit: int) -> dict[str, Any]:
        items, total = await self._merged_page(offset, limit)
        return {"items": items, "total": total, "offset": offset, "limit": limit}

    async def overview(self, offset: int, limit: int) -> dict[str, Any]:
        page, total = await self._merged_page(offset, limit)
        by_actor: dict[int, list[str]] = {}
        for item in page:
            by_actor.setdefault(self.index(item["id"]), []).append(item["id"])
        rows: dict[str, dict[str, Any]] = {}
        replies = await asyncio.gather(
            *(
                self._await(i, self.actors[i].call.remote("overview_items", ids))
                for i, ids in by_actor.items()
            )
        )
        for reply in replies:
            rows.update((row["id"], row) for row in _raise(reply))
        items = [rows[item["id"]] for item in page if item["id"] in rows]
        return {"items": items, "total": total, "offset": offset, "limit": limit}

    async def stream(
        self, series_id: str, horizon: int, level: float | None
    ) -> AsyncIterator[dict[str, Any]]:
        if self.streams >= self.settings.max_streams:
            raise ApiError(429, "too many open forecast streams (EPISODIC_KOOPMAN_MAX_STREAMS)")
        index = self.index(series_id)
        actor = self.actors[index]
        stream_id = _raise(
            await self._await(index, actor.stream_open.remote(series_id, horizon, level))
        )
        return self._events(index, series_id, horizon, level, stream_id)

    async def _events(
        self, index: int, series_id: str, horizon: int, level: float | None, stream_id: int
    ) -> AsyncIterator[dict[str, Any]]:
        import ray.exceptions

        actor = self.actors[index]
        sent = -1
        self.streams += 1  # counted inside the generator: its finally always uncounts it
        try:
            while True:
                try:
                    kind, value = await actor.stream_next.remote(stream_id, STREAM_POLL_SECONDS)
                except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
                    # The actor died: subscribe again on its successor (a fresh forecast first).
                    stream_id = _raise(await self._reopen(index, series_id, horizon, level))
                    continue
                if kind == "forecast":
                    if value["n_observations"] > sent:
                        sent = value["n_observations"]
                        yield value
                elif kind == "end":
                    return
                elif kind == "error":
                    raise ApiError(*value)
        finally:
            self.streams -= 1
            with contextlib.suppress(Exception):
                actor.stream_close.remote(stream_id)

    async def _reopen(
        self, index: int, series_id: str, horizon: int, level: float | None
    ) -> tuple[Any, ...]:
        """Open the stream on the restarted actor, waiting for it (bounded)."""
        import ray.exceptions

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.read_your_writes_timeout
        delay = 0.1
        while True:
            try:
                return await self.actors[index].stream_open.remote(series_id, horizon, level)
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
                if loop.time() > deadline:
                    raise ApiError(503, f"shard actor {index} is unavailable") from None
                await asyncio.sleep(delay)  # back off while Ray restarts the actor
                delay = min(1.0, delay * 2)

    async def refresh_metrics(self) -> None:
        """One cheap call per actor, concurrently; an actor that does not answer in time
        (restarting, say) keeps its last reported values."""
        import ray.exceptions

        async def refresh(index: int, actor: Any) -> None:
            try:
                reported = await asyncio.wait_for(
                    self._await(index, actor.model_metrics.remote()), METRICS_TIMEOUT_SECONDS
                )
            except (TimeoutError, ApiError, ray.exceptions.RayError):
                return
            self.metrics.shard_totals.update(index, reported)

        await asyncio.gather(*(refresh(i, actor) for i, actor in enumerate(self.actors)))

    async def readiness(self) -> tuple[str, dict[str, Any]]:
        try:
            states = await self._everywhere("readiness")
        except ApiError:
            return "unavailable", {"shards": len(self.actors)}
        statuses = [status for status, _ in states]
        details = {
            "shards": len(self.actors),
            "series": sum(d.get("series", 0) for _, d in states),
            "restoring": sum(d.get("restoring", 0) for _, d in states),
            "apply_backlog": sum(d.get("apply_backlog", 0) for _, d in states),
            "commits": sum(d.get("commits", 0) for _, d in states),
        }
        if "unavailable" in statuses:
            return "unavailable", details
        return ("restoring" if "restoring" in statuses else "ready"), details
