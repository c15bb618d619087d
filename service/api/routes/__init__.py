"""Routers: `/v1` resources (behind the API key) and the open operational endpoints.

Each resource router carries its full prefix (``/v1/series``) and the API-key
dependency, so route templates in metrics are the real paths.
"""

from __future__ import annotations

from . import docs, episodes, forecast, health, metrics, observations, overview, series, ui

ROUTERS = (
    health.router,
    docs.router,
    metrics.router,
    series.router,
    observations.router,
    forecast.router,
    episodes.router,
    overview.router,
    ui.router,
)
