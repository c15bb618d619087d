"""What a forecast returns: values, intervals, and why (recalled episodes, spectrum)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from .recaller import Recall
from .spectrum import Spectrum


@dataclass(frozen=True)
class RecalledEpisode:
    """One matched past episode and its share of the correction."""

    id: int
    origin: int
    window_start: int
    distance: float
    weight: float


@dataclass(frozen=True)
class Forecast:
    """A forecast that explains itself.

    ``mean``, ``lower`` and ``upper`` have shape ``(horizon,)`` for a single
    series and ``(horizon, n_channels)`` for channels. ``recalled`` lists the
    matched episodes (empty when memory did not apply) and ``spectrum`` the
    current fit (``None`` before the first fit, when ``fallback`` is true and
    the mean is the last value). ``n_clipped`` counts the fit's eigenvalues
    outside the unit circle that were pulled onto it for this forecast
    (``stabilize="clip"``); ``clipped`` says whether there were any.
    """

    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    level: float
    channels: list[str] | None
    recalled: list[RecalledEpisode] = field(default_factory=list)
    recall_applied: bool = False
    spectrum: Spectrum | None = None
    fallback: bool = False
    n_clipped: int = 0

    @property
    def clipped(self) -> bool:
        """Whether eigenvalues were pulled onto the unit circle for this forecast."""
        return self.n_clipped > 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (NaN bounds, which exist only before any data, become ``None``)."""

        def clean(a: np.ndarray) -> list[Any]:
            return [None if not math.isfinite(x) else float(x) for x in np.ravel(a)]

        def shaped(a: np.ndarray) -> Any:
            if self.channels is None:
                return clean(a)
            return {ch: clean(a[:, j]) for j, ch in enumerate(self.channels)}

        return {
            "mean": shaped(self.mean),
            "lower": shaped(self.lower),
            "upper": shaped(self.upper),
            "level": self.level,
            "recall_applied": self.recall_applied,
            "recalled": [r.__dict__ for r in self.recalled],
            "spectrum": self.spectrum.summary() if self.spectrum is not None else [],
            "fallback": self.fallback,
            "n_clipped": self.n_clipped,
        }


def recalled_episodes(recall: Recall | None) -> list[RecalledEpisode]:
    """The public view of a recall, best match first."""
    if recall is None:
        return []
    return [
        RecalledEpisode(
            id=int(i),
            origin=int(recall.records["origin"][j]),
            window_start=int(recall.records["window_start"][j]),
            distance=float(recall.distances[j]),
            weight=float(recall.weights[j]),
        )
        for j, i in enumerate(recall.ids)
    ]


def fallback_values(
    last: np.ndarray, horizon: int, level: float, scale: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Before the first fit: ``(mean, lower, upper)``, the last value ``(horizon, c)``.

    The interval is Gaussian with the series' running ``scale`` when known, NaN otherwise.
    """
    mean = np.repeat(last[None, :], horizon, axis=0)
    if scale is None:
        nan = np.full_like(mean, np.nan)
        return mean, nan, nan
    half = NormalDist().inv_cdf(0.5 + level / 2) * scale
    return mean, mean - half, mean + half
