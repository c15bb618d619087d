"""``/v1/overview``: every series with its model's memory size and coverage, for the web view."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from ...deps import Limit, Offset, State, check_limit, require_api_key
from ...schemas import ErrorOut, SeriesSummary

router = APIRouter(prefix="/v1", tags=["series"], dependencies=[Depends(require_api_key)])


class SeriesOverview(SeriesSummary):
    level: float = Field(description="The interval level `coverage` is measured at.")
    applied: int = Field(description="Observations the model has learned so far.")
    memory_size: int | None = Field(
        description="Recallable episodes; null while the model is loading or busy."
    )
    coverage: float | None = Field(
        description="Empirical coverage of the intervals issued so far (null before any)."
    )


class OverviewPage(BaseModel):
    items: list[SeriesOverview]
    total: int
    offset: int
    limit: int


@router.get("/overview", response_model=OverviewPage, responses={401: {"model": ErrorOut}})
async def overview(state: State, offset: Offset = 0, limit: Limit = 100) -> dict[str, Any]:
    """Series by id, with memory size and interval coverage as the models stand now.

    Cheap: it does not wait for models to apply acknowledged observations
    (compare `applied` with `n_observations`).
    """
    check_limit("limit", limit, state.settings.max_page_size, "MAX_PAGE_SIZE")
    return await state.serving.overview(offset, limit)
