"""What a batch run forecasts and how (`BatchConfig`), checked before anything runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..forecaster import MAX_HORIZON, EpisodicKoopman
from ..stream import missing_policy
from .errors import BatchInputError
from .timestamps import MISSING

MEMORY_SCOPES = ("series", "shared")


@dataclass(frozen=True)
class BatchConfig:
    """What to forecast and how. ``params`` go to `EpisodicKoopman`."""

    horizon: int
    level: float = 0.9
    missing: str = "error"
    scope: str = "series"
    params: dict[str, Any] = field(default_factory=dict)
    save_dir: str | None = None
    partitions: int | None = None  # shared scope only; None: one per worker

    def validate(self) -> None:
        if isinstance(self.horizon, bool) or not isinstance(self.horizon, int):
            raise BatchInputError(f"horizon must be an integer, got {self.horizon!r}")
        if not 1 <= self.horizon <= MAX_HORIZON:
            raise BatchInputError(
                f"horizon must be between 1 and {MAX_HORIZON}, got {self.horizon}"
            )
        if not (isinstance(self.level, int | float) and 0 < self.level < 1):
            raise BatchInputError(f"level must lie strictly between 0 and 1, got {self.level!r}")
        try:
            missing_policy(self.missing, MISSING)
        except ValueError as exc:
            raise BatchInputError(str(exc)) from None
        if self.scope not in MEMORY_SCOPES:
            raise BatchInputError(
                f"memory scope must be one of {list(MEMORY_SCOPES)}, got {self.scope!r}"
            )
        if self.partitions is not None and self.partitions < 1:
            raise BatchInputError(f"partitions must be >= 1, got {self.partitions}")
        try:
            model = EpisodicKoopman.from_flat(self.params)
        except (TypeError, ValueError) as exc:
            raise BatchInputError(f"invalid model parameters: {exc}") from None
        if self.scope == "shared" and model.memory is None:
            raise BatchInputError("--memory-scope shared needs a model with memory (memory=true)")
