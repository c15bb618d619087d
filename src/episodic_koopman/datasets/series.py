"""`Series`: what every dataset, synthetic or real, is loaded as."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Series:
    """A named series with optional timestamps and seasonal periods.

    ``values`` is ``(n,)``, or ``(n, len(channels))`` for a multichannel series.
    ``season`` is the main period; ``seasons`` all of them (for MSTL), when the
    series has several (hourly data: a day and a week).
    """

    name: str
    values: np.ndarray
    season: int | None = None
    timestamps: np.ndarray | None = None
    description: str = ""
    regimes: np.ndarray | None = field(default=None, repr=False)
    unit: str = ""  # what a value measures, for axis labels
    seasons: tuple[int, ...] | None = None
    channels: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return int(self.values.shape[0])
