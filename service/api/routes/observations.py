"""``/v1/series/{id}/observations``: durable, idempotent ingestion (JSON or NDJSON)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from ...deps import Limit, Offset, SeriesId, State, check_limit, require_api_key
from ...errors import ApiError
from ...ingest import (
    NDJSON_TYPES,
    BatchParser,
    ParsedBatch,
    parse_json_body,
    parse_ndjson_stream,
)
from ...schemas import ErrorOut, IngestResult, ObservationPage
from ...settings import Settings

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
    engine = state.serving
    async with engine.push_slot():
        batch = await _parse(request, state.settings)
        body = await engine.ingest(series_id, batch)
    state.metrics.ingested.inc(body["accepted"])
    state.metrics.duplicates.inc(body["duplicates"])
    return JSONResponse(body)


async def _parse(request: Request, settings: Settings) -> ParsedBatch:
    parser = BatchParser(
        settings.max_observations_per_request, settings.max_abs_value, settings.max_channels
    )
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media in NDJSON_TYPES:
        return await parse_ndjson_stream(request.stream(), parser)
    if media in ("application/json", "") or media.endswith("+json"):
        raw = await request.body()
        if len(raw) > _PARSE_OFF_LOOP_BYTES:
            return await asyncio.to_thread(parse_json_body, raw, parser)
        return parse_json_body(raw, parser)
    raise ApiError(415, "send application/json or application/x-ndjson")


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
    return JSONResponse(await state.serving.observations(series_id, offset, limit))
