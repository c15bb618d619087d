"""``/v1/series/{id}/observations``: durable, idempotent ingestion (JSON or NDJSON)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from ...deps import Limit, Offset, SeriesId, ServiceState, State, check_limit, require_api_key
from ...errors import ApiError
from ...ingest import NDJSON_TYPES, BatchParser, parse_json_body, parse_ndjson_stream
from ...schemas import ErrorOut, IngestResult, ObservationPage
from ...store import Ingest, IngestOutcome
from ...timestamps import render_t

router = APIRouter(
    prefix="/v1/series", tags=["observations"], dependencies=[Depends(require_api_key)]
)

#: JSON bodies larger than this are parsed in a thread, not on the event loop.
_PARSE_OFF_LOOP_BYTES = 256 * 1024

_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ObservationBatch"}},
            "application/x-ndjson": {
                "schema": {
                    "type": "string",
                    "description": "One Observation object as JSON per line.",
                }
            },
        },
    }
}


@router.post(
    "/{series_id}/observations",
    response_model=IngestResult,
    openapi_extra=_BODY,
    responses={
        401: {"model": ErrorOut},
        403: {"model": ErrorOut, "description": "The series limit is reached."},
        409: {"model": ErrorOut, "description": "A t conflicts with stored observations."},
        413: {"model": ErrorOut},
        415: {"model": ErrorOut},
        422: {"model": ErrorOut},
        503: {"model": ErrorOut, "description": "Too many observations await their models."},
    },
)
async def push_observations(series_id: SeriesId, request: Request, state: State) -> Any:
    """Append observations; the response comes once they are durable.

    The first push to an unknown series creates it with default parameters.
    Idempotent on ``(series, t)``: re-sending a stored observation counts as a
    duplicate; the same ``t`` with another ``y``, or a ``t`` older than the
    series' last one, is a 409. The whole request is accepted or none of it is.
    """
    registry, _ = state.live
    settings = state.settings
    if registry.backlog > settings.max_apply_backlog:
        raise ApiError(
            503,
            f"{registry.backlog} acknowledged observations are waiting for their models "
            "(EPISODIC_KOOPMAN_MAX_APPLY_BACKLOG); retry later",
            headers={"Retry-After": "2"},
        )
    registry.pushes_in_flight += 1
    try:
        return await _push(series_id, request, state)
    finally:
        registry.pushes_in_flight -= 1


async def _push(series_id: str, request: Request, state: ServiceState) -> Any:
    registry, _ = state.live
    settings = state.settings
    parser = BatchParser(
        settings.max_observations_per_request, settings.max_abs_value, settings.max_channels
    )
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media in NDJSON_TYPES:
        batch = await parse_ndjson_stream(request.stream(), parser)
    elif media in ("application/json", "") or media.endswith("+json"):
        raw = await request.body()
        if len(raw) > _PARSE_OFF_LOOP_BYTES:
            batch = await asyncio.to_thread(parse_json_body, raw, parser)
        else:
            batch = parse_json_body(raw, parser)
    else:
        raise ApiError(415, "send application/json or application/x-ndjson")
    if not batch:
        series = registry.catalog.get(series_id)
        record = series.record if series is not None else None
        return JSONResponse(
            {
                "accepted": 0,
                "duplicates": 0,
                "last_t": record.last_t if record else None,
                "n_observations": record.count if record else 0,
            }
        )
    outcome: IngestOutcome = await state.submit(Ingest(series_id, batch))
    state.metrics.ingested.inc(outcome.accepted)
    state.metrics.duplicates.inc(outcome.duplicates)
    return JSONResponse(
        {
            "accepted": outcome.accepted,
            "duplicates": outcome.duplicates,
            "last_t": outcome.record.last_t,
            "n_observations": outcome.record.count,
        }
    )


@router.get(
    "/{series_id}/observations",
    response_model=ObservationPage,
    responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
async def list_observations(
    series_id: SeriesId, state: State, offset: Offset = 0, limit: Limit = 100
) -> Any:
    """Stored observations in order (``seq`` is the model's observation index)."""
    check_limit("limit", limit, state.settings.max_page_size, "MAX_PAGE_SIZE")
    registry, _ = state.live
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
    return JSONResponse({"items": items, "total": record.count, "offset": offset, "limit": limit})
