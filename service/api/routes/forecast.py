"""``/v1/series/{id}/forecast``: forecasts that explain themselves, and their SSE stream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse

from ...deps import Horizon, Level, SeriesId, State, check_limit, require_api_key
from ...errors import ApiError
from ...registry import INLINE_HORIZON, Subscriber
from ...schemas import ErrorOut, ForecastOut

router = APIRouter(prefix="/v1/series", tags=["forecast"], dependencies=[Depends(require_api_key)])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut},
    404: {"model": ErrorOut},
    422: {"model": ErrorOut},
    503: {"model": ErrorOut, "description": "The model is still catching up; retry."},
}


@router.get("/{series_id}/forecast", response_model=ForecastOut, responses=_ERRORS)
async def get_forecast(
    series_id: SeriesId, state: State, horizon: Horizon = 24, level: Level = None
) -> Any:
    """Mean and interval per step, step timestamps (regular spacing), recalled episodes, spectrum.

    Read-your-writes: the forecast reflects every observation acknowledged before
    this request arrived.
    """
    check_limit("horizon", horizon, state.settings.max_horizon, "MAX_HORIZON")
    registry, _ = state.live
    series = registry.get(series_id)
    if level is None:
        level = float(series.record.params["level"])
    small = horizon <= INLINE_HORIZON
    payload = await registry.read(series, registry.forecast_payload, horizon, level, small=small)
    return JSONResponse(payload)


@router.get(
    "/{series_id}/forecast/stream",
    responses={
        **_ERRORS,
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "Server-Sent Events: `forecast` events (ForecastOut as JSON), "
            "heartbeat comments, and `deleted` if the series goes away.",
        },
        429: {"model": ErrorOut, "description": "Too many open streams."},
    },
)
async def stream_forecast(
    series_id: SeriesId, state: State, horizon: Horizon = 24, level: Level = None
) -> Any:
    """A `forecast` event now and after every accepted batch, with heartbeats in between."""
    check_limit("horizon", horizon, state.settings.max_horizon, "MAX_HORIZON")
    registry, _ = state.live
    series = registry.get(series_id)
    if registry.streams >= state.settings.max_streams:
        raise ApiError(429, "too many open forecast streams (EPISODIC_KOOPMAN_MAX_STREAMS)")
    resolved = float(series.record.params["level"]) if level is None else level
    subscriber = Subscriber(horizon, resolved)

    async def events() -> AsyncIterator[dict[str, str]]:
        # Subscribed inside the generator: its finally runs on every way out
        # (disconnect, deletion, shutdown), so the subscription cannot leak.
        registry.open_stream(series, subscriber)
        try:
            payload = await registry.read(series, registry.forecast_payload, horizon, resolved)
            sent = -1
            while payload is not None:
                # A batch applied while the first forecast was computed is already in it.
                if payload["n_observations"] > sent:
                    sent = payload["n_observations"]
                    yield {
                        "event": "forecast",
                        "id": str(sent),
                        "data": json.dumps(payload, allow_nan=False, separators=(",", ":")),
                    }
                payload = await subscriber.queue.get()
            yield {"event": "deleted", "data": json.dumps({"series_id": series_id})}
        finally:
            registry.close_stream(series, subscriber)

    return EventSourceResponse(events(), ping=state.settings.heartbeat_seconds)
