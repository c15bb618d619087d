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
    """Readiness: the writers are running and start-up restoration has finished."""
    engine = state.engine
    status, details = await engine.readiness() if engine is not None else ("unavailable", {})
    if status != "ready":
        return JSONResponse({"status": status, "details": details}, status_code=503)
    return {"status": status, "details": details}
