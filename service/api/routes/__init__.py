"""Routers: `/v1` resources (behind the API key) and the open operational endpoints."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from ...deps import require_api_key
from . import episodes, forecast, health, metrics, observations, series

v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)])
for module in (series, observations, forecast, episodes):
    v1.include_router(module.router)

open_routes = APIRouter()
open_routes.include_router(health.router)
open_routes.include_router(metrics.router)
