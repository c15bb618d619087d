"""``/v1/series``: create or configure, list, inspect and delete series."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from ...deps import Limit, Offset, SeriesId, State, check_limit, require_api_key
from ...errors import ApiError
from ...schemas import ErrorOut, SeriesConfig, SeriesInfo, SeriesPage

router = APIRouter(prefix="/v1/series", tags=["series"], dependencies=[Depends(require_api_key)])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut},
    404: {"model": ErrorOut},
    422: {"model": ErrorOut},
}


@router.get("", response_model=SeriesPage, responses={401: {"model": ErrorOut}})
async def list_series(state: State, offset: Offset = 0, limit: Limit = 100) -> dict[str, Any]:
    """Series, ordered by id."""
    check_limit("limit", limit, state.settings.max_page_size, "MAX_PAGE_SIZE")
    return await state.serving.list_series(offset, limit)


@router.put(
    "/{series_id}",
    response_model=SeriesInfo,
    status_code=200,
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/SeriesConfig"}}
            },
        }
    },
    responses={**_ERRORS, 201: {"model": SeriesInfo}, 403: {"model": ErrorOut}},
)
async def configure_series(series_id: SeriesId, state: State, request: Request) -> Any:
    """Create a series, or set its model parameters (201 when created).

    The body (`SeriesConfig`) is optional. Omitted parameters take the library's
    defaults, frozen at this moment. Changing the parameters of a series with
    observations rebuilds its model by replaying them.
    """
    raw = await request.body()
    config = SeriesConfig()
    if raw.strip():
        try:
            config = SeriesConfig.model_validate_json(raw)
        except ValidationError as exc:
            # Parsed here rather than by FastAPI, so that undecodable bytes are a 422 too.
            raise RequestValidationError(
                [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
            ) from None
    payload, created = await state.serving.configure(series_id, config.params.given())
    return JSONResponse(payload, status_code=201 if created else 200)


@router.get("/{series_id}", response_model=SeriesInfo, responses=_ERRORS)
async def get_series(series_id: SeriesId, state: State) -> Any:
    """Configuration, counts, last timestamp, memory size and the current spectrum."""
    return JSONResponse(await state.serving.info(series_id))


@router.delete("/{series_id}", status_code=204, responses=_ERRORS)
async def delete_series(series_id: SeriesId, state: State) -> Response:
    """Remove the series, its observations, model and snapshots."""
    if not await state.serving.delete(series_id):
        raise ApiError(404, f"series {series_id!r} does not exist")
    return Response(status_code=204)
