"""``/v1/overview``: every series with its model's memory size and coverage, for the web view."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from ...deps import Limit, Offset, State, check_limit, require_api_key
from ...schemas import ErrorOut, OverviewPage

router = APIRouter(prefix="/v1", tags=["series"], dependencies=[Depends(require_api_key)])


@router.get("/overview", response_model=OverviewPage, responses={401: {"model": ErrorOut}})
async def overview(state: State, offset: Offset = 0, limit: Limit = 100) -> dict[str, Any]:
    """Series by id, with memory size and interval coverage as the models stand now.

    Cheap: it does not wait for models to apply acknowledged observations
    (compare `applied` with `n_observations`).
    """
    check_limit("limit", limit, state.settings.max_page_size, "MAX_PAGE_SIZE")
    return await state.serving.overview(offset, limit)
