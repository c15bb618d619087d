"""``/v1/series/{id}/episodes``: browse the episodic memory."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from ...deps import Limit, Offset, SeriesId, State, check_limit, require_api_key
from ...schemas import EpisodePage, ErrorOut

router = APIRouter(prefix="/v1/series", tags=["episodes"], dependencies=[Depends(require_api_key)])


@router.get(
    "/{series_id}/episodes",
    response_model=EpisodePage,
    responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
async def list_episodes(
    series_id: SeriesId, state: State, offset: Offset = 0, limit: Limit = 100
) -> Any:
    """Stored episodes, oldest first: spectrum, span, what they forecast and what happened."""
    check_limit("limit", limit, min(state.settings.max_page_size, 10_000), "MAX_PAGE_SIZE")
    return JSONResponse(await state.serving.episodes(series_id, offset, limit))
