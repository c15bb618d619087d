"""``/v1/series/{id}/forecast``: forecasts that explain themselves, and their SSE stream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse

from ...deps import Horizon, Level, SeriesId, State, check_limit, require_api_key
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
    return JSONResponse(await state.serving.forecast(series_id, horizon, level))


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
    # 404 and 429 are raised here, before the response starts.
    forecasts = await state.serving.stream(series_id, horizon, level)

    async def events() -> AsyncIterator[dict[str, str]]:
        try:
            async for payload in forecasts:
                yield {
                    "event": "forecast",
                    "id": str(payload["n_observations"]),
                    "data": json.dumps(payload, allow_nan=False, separators=(",", ":")),
                }
            # The forecasts end only when the series is deleted.
            yield {"event": "deleted", "data": json.dumps({"series_id": series_id})}
        finally:
            await forecasts.aclose()  # type: ignore[attr-defined]

    return EventSourceResponse(events(), ping=state.settings.heartbeat_seconds)
