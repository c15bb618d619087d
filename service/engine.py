"""What the routes ask of the models and the store: one interface, two engines.

`LocalEngine` is the in-process service (one `Registry` of models, one `Committer`):
what ``episodic-koopman serve`` runs. ``serve --engine ray`` runs
`service.ray_engine.RayEngine` instead, which forwards each call to the shard actor
owning the series; every shard actor serves its series with a `LocalEngine` of its
own, so both engines answer with the same code and the same guarantees.

Every method returns JSON-ready values (or raises `ApiError`): they cross process
boundaries in the Ray engine.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Protocol

import numpy as np

from .errors import ApiError
from .ingest import ParsedBatch
from .overview import peek_page
from .payloads import summary
from .registry import INLINE_HORIZON, Registry
from .series import Subscriber
from .settings import Settings
from .store import Committer, Configure, ConfigureOutcome, Delete, Ingest, IngestOutcome
from .timestamps import render_t


class Engine(Protocol):
    """The operations behind the ``/v1`` routes (read-your-writes on every read)."""

    def push_slot(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Held while a push is parsed and stored (backlog admission, push accounting)."""

    async def ingest(self, series_id: str, batch: ParsedBatch) -> dict[str, Any]: ...

    async def configure(self, series_id: str, params: dict[str, Any]) -> tuple[dict, bool]:
        """The series' info after the change, and whether it was created."""

    async def delete(self, series_id: str) -> bool: ...

    async def info(self, series_id: str) -> dict[str, Any]: ...

    async def forecast(self, series_id: str, horizon: int, level: float | None) -> dict: ...

    async def episodes(self, series_id: str, offset: int, limit: int) -> dict[str, Any]: ...

    async def observations(self, series_id: str, offset: int, limit: int) -> dict[str, Any]: ...

    async def list_series(self, offset: int, limit: int) -> dict[str, Any]: ...

    async def overview(self, offset: int, limit: int) -> dict[str, Any]: ...

    async def stream(
        self, series_id: str, horizon: int, level: float | None
    ) -> AsyncIterator[dict[str, Any]]:
        """Checks (404, 429) now; the iterator yields forecasts and ends if the series goes."""

    async def readiness(self) -> tuple[str, dict[str, Any]]:
        """``("ready" | "restoring" | "unavailable", details)``."""

    async def refresh_metrics(self) -> None:
        """Bring the models' metrics of ``/metrics`` up to date (where the models live)."""


class LocalEngine:
    """The models and the single writer of this process."""

    def __init__(self, settings: Settings, registry: Registry, committer: Committer) -> None:
        self.settings = settings
        self.registry = registry
        self.committer = committer

    async def _submit(self, command: Ingest | Configure | Delete) -> Any:
        return await asyncio.wrap_future(self.committer.submit(command))

    # ------------------------------------------------------------------ writes
    @contextlib.asynccontextmanager
    async def push_slot(self) -> AsyncIterator[None]:
        registry = self.registry
        if registry.backlog > self.settings.max_apply_backlog:
            raise ApiError(
                503,
                f"{registry.backlog} acknowledged observations are waiting for their models "
                "(EPISODIC_KOOPMAN_MAX_APPLY_BACKLOG); retry later",
                headers={"Retry-After": "2"},
            )
        registry.applier.pushes_in_flight += 1
        try:
            yield
        finally:
            registry.applier.pushes_in_flight -= 1

    async def ingest(self, series_id: str, batch: ParsedBatch) -> dict[str, Any]:
        if not batch:
            series = self.registry.catalog.get(series_id)
            record = series.record if series is not None else None
            return {
                "accepted": 0,
                "duplicates": 0,
                "last_t": record.last_t if record else None,
                "n_observations": record.count if record else 0,
            }
        outcome: IngestOutcome = await self._submit(Ingest(series_id, batch))
        return {
            "accepted": outcome.accepted,
            "duplicates": outcome.duplicates,
            "last_t": outcome.record.last_t,
            "n_observations": outcome.record.count,
        }

    async def configure(self, series_id: str, params: dict[str, Any]) -> tuple[dict, bool]:
        outcome: ConfigureOutcome = await self._submit(Configure(series_id, params))
        return await self.info(series_id), outcome.created

    async def delete(self, series_id: str) -> bool:
        return bool(await self._submit(Delete(series_id)))

    # ------------------------------------------------------------------ reads
    async def info(self, series_id: str) -> dict[str, Any]:
        registry = self.registry
        return await registry.read(registry.get(series_id), registry.payloads.info)

    async def forecast(self, series_id: str, horizon: int, level: float | None) -> dict:
        registry = self.registry
        series = registry.get(series_id)
        if level is None:
            level = float(series.record.params["level"])
        small = horizon <= INLINE_HORIZON
        return await registry.read(series, registry.payloads.forecast, horizon, level, small=small)

    async def episodes(self, series_id: str, offset: int, limit: int) -> dict[str, Any]:
        registry = self.registry
        series = registry.get(series_id)
        return await registry.read(series, registry.payloads.episodes, offset, limit)

    async def observations(self, series_id: str, offset: int, limit: int) -> dict[str, Any]:
        registry = self.registry
        record = registry.get(series_id).record
        rows = await asyncio.get_running_loop().run_in_executor(
            registry.read_pool, registry.reader.page, record.sid, offset, limit
        )
        items = []
        for seq, key, blob in rows:
            values = np.frombuffer(blob, dtype=np.float64).tolist()
            y: Any = (
                values[0]
                if record.channels is None
                else dict(zip(record.channels, values, strict=True))
            )
            items.append(
                {"seq": seq, "t": render_t(record.time_kind or "number", key, record.tz), "y": y}
            )
        return {"items": items, "total": record.count, "offset": offset, "limit": limit}

    async def list_series(self, offset: int, limit: int) -> dict[str, Any]:
        registry = self.registry
        ids = registry.sorted_ids()
        items = []
        for series_id in ids[offset : offset + limit]:
            series = registry.catalog.get(series_id)
            if series is not None:
                items.append(summary(series.record))
        return {"items": items, "total": len(ids), "offset": offset, "limit": limit}

    async def overview(self, offset: int, limit: int) -> dict[str, Any]:
        ids = self.registry.sorted_ids()
        items = await self.overview_items(ids[offset : offset + limit])
        return {"items": items, "total": len(ids), "offset": offset, "limit": limit}

    async def overview_items(self, ids: list[str]) -> list[dict[str, Any]]:
        """`overview` rows of these series (those that exist), in order."""
        registry = self.registry
        return await registry.loop.run_in_executor(registry.read_pool, peek_page, registry, ids)

    async def stream(
        self, series_id: str, horizon: int, level: float | None
    ) -> AsyncIterator[dict[str, Any]]:
        registry = self.registry
        series = registry.get(series_id)
        if registry.streams >= self.settings.max_streams:
            raise ApiError(429, "too many open forecast streams (EPISODIC_KOOPMAN_MAX_STREAMS)")
        resolved = float(series.record.params["level"]) if level is None else level
        subscriber = Subscriber(horizon, resolved)

        async def events() -> AsyncIterator[dict[str, Any]]:
            # Subscribed inside the generator: its finally runs on every way out
            # (disconnect, deletion, shutdown), so the subscription cannot leak.
            registry.open_stream(series, subscriber)
            try:
                payload = await registry.read(series, registry.payloads.forecast, horizon, resolved)
                sent = -1
                while payload is not None:
                    # A batch applied while the first forecast was computed is already in it.
                    if payload["n_observations"] > sent:
                        sent = payload["n_observations"]
                        yield payload
                    payload = await subscriber.queue.get()
            finally:
                registry.close_stream(series, subscriber)

        return events()

    async def refresh_metrics(self) -> None:
        pass  # the models update this process's metrics as they go

    async def readiness(self) -> tuple[str, dict[str, Any]]:
        registry, committer = self.registry, self.committer
        if not committer.is_alive:
            return "unavailable", {}
        details = {
            "series": len(registry.catalog),
            "restoring": registry.preloading,
            "apply_backlog": registry.backlog,
            "commits": committer.commits,
        }
        return ("restoring" if registry.preloading else "ready"), details
