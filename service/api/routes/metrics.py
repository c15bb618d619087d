"""``/metrics``: Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ...deps import State

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(state: State) -> Response:
    """Request counts and latency, observations ingested and applied, forecasts and recalls."""
    if state.engine is not None:
        await state.engine.refresh_metrics()
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
