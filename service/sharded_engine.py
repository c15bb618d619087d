"""An `Engine` over shard hosts: each series' calls go to the one process that owns it.

A shard host (`service.ray_engine.actor.ShardActor`) is the one-process service for a
fixed set of storage shards: its own `Registry` of models and `Committer`. This
engine routes every call to the owner of its series' storage shard and merges the
answers of calls about every series. How a call reaches a host is the transport's:
Ray actors (`service.ray_engine`) or local child processes (`service.shard_processes`).

A call that finds its host gone (killed, restarting) is answered 503 with
``Retry-After``; a push's retry is idempotent on ``(series, t)``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Protocol

from .errors import ApiError
from .ingest import ParsedBatch
from .metrics import Metrics
from .settings import Settings
from .storage.records import shard_of

#: How long one `stream_next` poll waits in the host (well under its idle cut-off).
STREAM_POLL_SECONDS = 10.0
#: A scrape of ``/metrics`` waits this long for a host, then shows its last values.
METRICS_TIMEOUT_SECONDS = 5.0


class HostUnavailable(Exception):
    """The shard host did not answer: it died or is restarting."""


class Transport(Protocol):
    """Calls a `ShardActor` method in host ``index`` (raises `HostUnavailable` if it is gone)."""

    n_hosts: int

    async def invoke(self, index: int, method: str, *args: Any) -> Any: ...

    def forget(self, index: int, method: str, *args: Any) -> None:
        """Fire and forget (``stream_close``): errors are ignored."""


def _raise(reply: tuple[Any, ...]) -> Any:
    if reply[0] == "ok":
        return reply[1]
    _, status, detail, headers = reply
    raise ApiError(status, detail, headers)


class ShardedEngine:
    """`service.engine.Engine` over shard hosts (calls go to the series' owner)."""

    #: How the 503 of a gone host names it ("shard actor", "shard process").
    host_kind = "shard host"

    def __init__(
        self, settings: Settings, transport: Transport, n_shards: int, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.transport = transport
        self.n_shards = n_shards
        self.metrics = metrics
        self.streams = 0  # open SSE streams of this server (MAX_STREAMS, as a local server's)

    def index(self, series_id: str) -> int:
        # As `service.ray_engine.actor.actor_of`: storage shards dealt round-robin over hosts.
        return shard_of(series_id, self.n_shards) % self.transport.n_hosts

    async def _invoke(self, index: int, method: str, *args: Any) -> Any:
        try:
            return await self.transport.invoke(index, method, *args)
        except HostUnavailable:
            raise ApiError(
                503,
                f"{self.host_kind} {index} is restarting; retry (writes are idempotent on "
                "(series, t))",
                {"Retry-After": "1"},
            ) from None

    async def _call(self, series_id: str, method: str, *args: Any) -> Any:
        return _raise(await self._invoke(self.index(series_id), "call", method, series_id, *args))

    async def _everywhere(self, method: str, *args: Any) -> list[Any]:
        replies = await asyncio.gather(
            *(self._invoke(i, "call", method, *args) for i in range(self.transport.n_hosts))
        )
        return [_raise(reply) for reply in replies]

    # ------------------------------------------------------------------ writes
    @contextlib.asynccontextmanager
    async def push_slot(self) -> AsyncIterator[None]:
        yield  # admission (the apply backlog) is decided by the owning host

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
        """The page ``[offset, offset + limit)`` of every host's series, by id."""
        pages = await self._everywhere("list_series", 0, offset + limit)
        items = sorted((item for page in pages for item in page["items"]), key=lambda i: i["id"])
        return items[offset : offset + limit], sum(page["total"] for page in pages)

    async def list_series(self, offset: int, limit: int) -> dict[str, Any]:
        items, total = await self._merged_page(offset, limit)
        return {"items": items, "total": total, "offset": offset, "limit": limit}

    async def overview(self, offset: int, limit: int) -> dict[str, Any]:
        page, total = await self._merged_page(offset, limit)
        by_host: dict[int, list[str]] = {}
        for item in page:
            by_host.setdefault(self.index(item["id"]), []).append(item["id"])
        rows: dict[str, dict[str, Any]] = {}
        replies = await asyncio.gather(
            *(self._invoke(i, "call", "overview_items", ids) for i, ids in by_host.items())
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
        stream_id = _raise(await self._invoke(index, "stream_open", series_id, horizon, level))
        return self._events(index, series_id, horizon, level, stream_id)

    async def _events(
        self, index: int, series_id: str, horizon: int, level: float | None, stream_id: int
    ) -> AsyncIterator[dict[str, Any]]:
        transport = self.transport
        sent = -1
        self.streams += 1  # counted inside the generator: its finally always uncounts it
        try:
            while True:
                try:
                    kind, value = await transport.invoke(
                        index, "stream_next", stream_id, STREAM_POLL_SECONDS
                    )
                except HostUnavailable:
                    # The host died: subscribe again on its successor (a fresh forecast first).
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
            transport.forget(index, "stream_close", stream_id)

    async def _reopen(
        self, index: int, series_id: str, horizon: int, level: float | None
    ) -> tuple[Any, ...]:
        """Open the stream on the restarted host, waiting for it (bounded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.read_your_writes_timeout
        delay = 0.1
        while True:
            try:
                return await self.transport.invoke(index, "stream_open", series_id, horizon, level)
            except HostUnavailable:
                if loop.time() > deadline:
                    raise ApiError(503, f"{self.host_kind} {index} is unavailable") from None
                await asyncio.sleep(delay)  # back off while the host restarts
                delay = min(1.0, delay * 2)

    async def refresh_metrics(self) -> None:
        """One cheap call per host, concurrently; a host that does not answer in time
        (restarting, say) keeps its last reported values."""

        async def refresh(index: int) -> None:
            try:
                reported = await asyncio.wait_for(
                    self.transport.invoke(index, "model_metrics"), METRICS_TIMEOUT_SECONDS
                )
            except Exception:  # best effort: a scrape never fails for one host
                return
            self.metrics.shard_totals.update(index, reported)

        await asyncio.gather(*(refresh(i) for i in range(self.transport.n_hosts)))

    async def readiness(self) -> tuple[str, dict[str, Any]]:
        try:
            states = await self._everywhere("readiness")
        except ApiError:
            return "unavailable", {"shards": self.transport.n_hosts}
        statuses = [status for status, _ in states]
        details = {
            "shards": self.transport.n_hosts,
            "series": sum(d.get("series", 0) for _, d in states),
            "restoring": sum(d.get("restoring", 0) for _, d in states),
            "apply_backlog": sum(d.get("apply_backlog", 0) for _, d in states),
            "commits": sum(d.get("commits", 0) for _, d in states),
        }
        if "unavailable" in statuses:
            return "unavailable", details
        return ("restoring" if "restoring" in statuses else "ready"), details
