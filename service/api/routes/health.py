"""``/healthz`` (the process answers) and ``/readyz`` (storage open, models restored)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ...deps import State
from ...schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> dict[str, Any]:
    """Liveness: the event loop is answering."""
    return {"status": "ok", "details": {}}


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(state: State) -> Any:
    """Readiness: the committer is running and start-up restoration has finished."""
    registry, committer = state.registry, state.committer
    if registry is None or committer is None or not committer.is_alive:
        return JSONResponse({"status": "unavailable", "details": {}}, status_code=503)
    details = {
        "series": len(registry.catalog),
        "restoring": registry.preloading,
        "apply_backlog": registry.backlog,
    }
    if registry.preloading:
        return JSONResponse({"status": "restoring", "details": details}, status_code=503)
    return {"status": "ready", "details": details}
