"""Served forecasts as the library's own objects: `ServedForecast`, `parse_forecast`.

The JSON of ``GET /v1/series/{id}/forecast`` (or of a stream event) becomes a
`Forecast` with where it stands (series, observations, times), and the served
spectrum rows a `Spectrum`. No HTTP here: `episodic_koopman.client` fetches the
payloads and re-exports these names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .forecast import Forecast, RecalledEpisode
from .spectrum import Spectrum


@dataclass(frozen=True)
class ServedForecast(Forecast):
    """The library's `Forecast`, plus where it stands: series, observations, times.

    ``spectrum`` is rebuilt from the served modes (eigenvalues, with their conjugates,
    amplitudes and ``dt``), so ``spectrum.summary()`` equals the server's; the server does
    not send the modes' vectors, so ``spectrum.modes`` has no rows. It is ``None`` before
    the first fit. ``timestamps`` are the steps' times when the series' spacing is regular.
    """

    series_id: str = ""
    n_observations: int = 0
    last_t: str | float | None = None
    timestamps: list[str | float] | None = None
    #: Per recalled episode: the times of its window's start, its origin, and the end of
    #: what followed it (None where unknown).
    recalled_spans: list[list[str | float | None]] = field(default_factory=list)


def parse_forecast(payload: Mapping[str, Any]) -> ServedForecast:
    """A `ServedForecast` from the JSON of ``GET /v1/series/{id}/forecast`` (or a stream event)."""
    channels = payload.get("channels")

    def values(raw: Any) -> np.ndarray:
        def floats(items: Sequence[Any]) -> np.ndarray:
            return np.array([math.nan if v is None else v for v in items], dtype=np.float64)

        if channels is None:
            return floats(raw)
        return np.column_stack([floats(raw[name]) for name in channels])

    recalled = [
        RecalledEpisode(
            id=int(r["id"]),
            origin=int(r["origin"]),
            window_start=int(r["window_start"]),
            distance=math.nan if r["distance"] is None else float(r["distance"]),
            weight=math.nan if r["weight"] is None else float(r["weight"]),
        )
        for r in payload["recalled"]
    ]
    return ServedForecast(
        mean=values(payload["mean"]),
        lower=values(payload["lower"]),
        upper=values(payload["upper"]),
        level=float(payload["level"]),
        channels=list(channels) if channels is not None else None,
        recalled=recalled,
        recall_applied=bool(payload["recall_applied"]),
        spectrum=spectrum_from_rows(payload["spectrum"]),
        fallback=bool(payload["fallback"]),
        n_clipped=int(payload.get("n_clipped", 0)),
        series_id=str(payload.get("series_id", "")),
        n_observations=int(payload.get("n_observations", 0)),
        last_t=payload.get("last_t"),
        timestamps=payload.get("timestamps"),
        recalled_spans=[list(r.get("span") or [None, None, None]) for r in payload["recalled"]],
    )


def spectrum_from_rows(rows: Sequence[Mapping[str, Any]]) -> Spectrum | None:
    """A `Spectrum` from served rows (one per mode of non-negative frequency).

    >>> rows = [{"eigenvalue": [0.0, 1.0], "frequency": 0.125, "amplitude": 2.0},
    ...         {"eigenvalue": [0.5, 0.0], "frequency": 0.0, "amplitude": 1.0}]
    >>> s = spectrum_from_rows(rows)
    >>> s.eigenvalues.tolist(), s.dt
    ([1j, -1j, (0.5+0j)], 2.0)
    """
    if not rows:
        return None
    eigenvalues: list[complex] = []
    amplitudes: list[float] = []
    dt = None
    for row in rows:
        real, imag = (math.nan if x is None else x for x in row["eigenvalue"])
        lam = complex(real, imag)
        amplitude = math.nan if row["amplitude"] is None else float(row["amplitude"])
        eigenvalues.append(lam)
        amplitudes.append(amplitude)
        if imag != 0:  # the summary lists one of each conjugate pair
            eigenvalues.append(lam.conjugate())
            amplitudes.append(amplitude)
        frequency = row.get("frequency")
        angle = math.atan2(imag, real)
        if dt is None and frequency and angle:  # frequency = angle / (2 pi dt)
            dt = angle / (2 * math.pi * frequency)
    lams = np.array(eigenvalues, dtype=np.complex128)
    return Spectrum(
        eigenvalues=lams,
        amplitudes=np.array(amplitudes, dtype=np.float64),
        modes=np.zeros((0, lams.size), dtype=np.complex128),
        dt=float(dt) if dt is not None else 1.0,
    )
