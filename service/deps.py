"""Shared dependencies: the service state, API-key auth, and validated parameters."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .engine import Engine
from .errors import ApiError, invalid
from .metrics import Metrics
from .registry import Registry
from .schemas import SERIES_ID_PATTERN
from .settings import Settings
from .store import Committer


@dataclass
class ServiceState:
    """What the routes share; the engine exists between start-up and shutdown.

    ``registry`` and ``committer`` are the local engine's parts (None under Ray).
    """

    settings: Settings
    metrics: Metrics
    engine: Engine | None = None
    registry: Registry | None = None
    committer: Committer | None = None
    api_keys: list[bytes] = field(default_factory=list)

    @property
    def serving(self) -> Engine:
        """The engine, or 503 while the service starts or stops."""
        if self.engine is None:
            raise ApiError(503, "the service is starting or stopping", {"Retry-After": "1"})
        return self.engine

    @property
    def live(self) -> tuple[Registry, Committer]:
        """The local engine's parts (tests reach into them)."""
        if self.registry is None or self.committer is None:
            raise ApiError(503, "the service is starting or stopping", {"Retry-After": "1"})
        return self.registry, self.committer


# Dependencies are ``async def`` on purpose: FastAPI runs plain ``def`` ones in a thread
# pool, which costs a thread hop per dependency per request.
async def get_state(request: Request) -> ServiceState:
    return request.app.state.service


State = Annotated[ServiceState, Depends(get_state)]

_bearer = HTTPBearer(auto_error=False, description="An API key from EPISODIC_KOOPMAN_API_KEY.")


async def require_api_key(
    state: State,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """When keys are configured, demand ``Authorization: Bearer <key>`` (constant-time check)."""
    if not state.api_keys:
        return
    presented = credentials.credentials.encode() if credentials is not None else b""
    matched = False
    for key in state.api_keys:  # compare with every key: no early exit to time
        matched |= hmac.compare_digest(presented, key)
    if not matched:
        raise ApiError(401, "missing or invalid API key", headers={"WWW-Authenticate": "Bearer"})


SeriesId = Annotated[
    str,
    Path(
        pattern=SERIES_ID_PATTERN,
        min_length=1,
        max_length=128,
        description="Series id: 1 to 128 of A-Z a-z 0-9 . _ -, not dots only.",
    ),
]

#: Static bounds for OpenAPI; the configured limits are checked in `check_limit`.
Offset = Annotated[int, Query(ge=0, le=2**62, description="Items to skip.")]
Limit = Annotated[int, Query(ge=1, description="Items to return (at most max_page_size).")]
Horizon = Annotated[int, Query(ge=1, description="Steps ahead (at most max_horizon).")]
Level = Annotated[
    float | None,
    Query(gt=0, lt=1, description="Interval level; default: the series' `level` parameter."),
]


def check_limit(name: str, value: int, limit: int, setting: str) -> None:
    if value > limit:
        raise invalid(
            ["query", name],
            f"{name} must be <= {limit} (EPISODIC_KOOPMAN_{setting})",
            "less_than_equal",
        )
