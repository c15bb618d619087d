"""The API's bodies for a series: forecasts, episodes and info, rendered for JSON.

Each reads the series' model (its lock held by the caller) and the stored times of
the observations it names; non-finite floats become ``None``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from episodic_koopman import Forecast

from .metrics import Metrics
from .store import Reader, SeriesRecord, canonical_params
from .timestamps import TimeKey, future_times, render_t

if TYPE_CHECKING:
    from .series import Series


def finite(x: Any) -> float | None:
    """A float for JSON: non-finite values become None."""
    x = float(x)
    return x if math.isfinite(x) else None


def _finite_list(values: Any) -> list[Any]:
    return [finite(v) if not isinstance(v, list) else _finite_list(v) for v in values]


class Payloads:
    """Renders a series' model as the API returns it, counting forecasts and recalls."""

    def __init__(self, metrics: Metrics, reader: Reader) -> None:
        self.metrics = metrics
        self.reader = reader

    def forecast(self, series: Series, horizon: int, level: float) -> dict[str, Any]:
        """A forecast of the series' model as the API returns it (lock held)."""
        model = series.model
        assert model is not None
        forecast = model.predict(horizon, level)
        self.metrics.forecasts.inc()
        if forecast.recall_applied:
            self.metrics.recalls.inc()
            self.metrics.recalled_episodes.inc(len(forecast.recalled))
        return self._render(series, forecast, horizon, series.applied, series.applied_last_key)

    def _render(
        self,
        series: Series,
        forecast: Forecast,
        horizon: int,
        n: int,
        last_key: TimeKey | None,
    ) -> dict[str, Any]:
        record = series.record
        body = forecast.to_dict()
        kind = record.time_kind
        last_t = render_t(kind, last_key, record.tz) if kind and last_key is not None else None
        timestamps = None
        if kind and last_key is not None:
            timestamps = future_times(kind, last_key, record.spacing, n, record.tz, horizon)
        episode_horizon = int(record.params["episode_horizon"])
        recalled = body["recalled"]
        times = self.reader.times(
            record.sid,
            [
                s
                for r in recalled
                for s in (r["window_start"], r["origin"], r["origin"] + episode_horizon)
            ],
        )
        out_recalled = []
        for r in recalled:
            span = [r["window_start"], r["origin"], r["origin"] + episode_horizon]
            out_recalled.append(
                {
                    "id": r["id"],
                    "origin": r["origin"],
                    "window_start": r["window_start"],
                    "span": [
                        render_t(kind, times[s], record.tz) if kind and s in times else None
                        for s in span
                    ],
                    "distance": finite(r["distance"]),
                    "weight": finite(r["weight"]),
                }
            )
        return {
            "series_id": record.id,
            "n_observations": n,
            "last_t": last_t,
            "horizon": horizon,
            "level": float(forecast.level),
            "channels": forecast.channels,
            "timestamps": timestamps,
            "mean": body["mean"],
            "lower": body["lower"],
            "upper": body["upper"],
            "fallback": bool(forecast.fallback),
            "recall_applied": bool(forecast.recall_applied),
            "n_clipped": int(forecast.n_clipped),
            "recalled": out_recalled,
            "spectrum": spectrum_rows(body["spectrum"]),
        }

    def stream(self, series: Series) -> list[dict[str, Any]]:
        wanted = {(s.horizon, s.level) for s in list(series.subscribers)}
        return [self.forecast(series, h, level) for h, level in sorted(wanted)]

    def episodes(self, series: Series, offset: int, limit: int) -> dict[str, Any]:
        model = series.model
        assert model is not None
        record = series.record
        items = model.episodes(offset, limit)
        episode_horizon = int(record.params["episode_horizon"])
        kind = record.time_kind
        times = self.reader.times(
            record.sid,
            [
                s
                for e in items
                for s in (e["window_start"], e["origin"], e["origin"] + episode_horizon)
            ],
        )
        for e in items:
            span = [e["window_start"], e["origin"], e["origin"] + episode_horizon]
            e["span"] = [
                render_t(kind, times[s], record.tz) if kind and s in times else None for s in span
            ]
            e["frequencies"] = _finite_list(e["frequencies"])
            e["growth_rates"] = _finite_list(e["growth_rates"])
            e["forecast"] = None if e["forecast"] is None else _finite_list(e["forecast"])
            e["realised"] = _finite_list(e["realised"])
            e["mae"] = None if e["mae"] is None else finite(e["mae"])
        return {"items": items, "total": model.memory_size, "offset": offset, "limit": limit}

    def info(self, series: Series) -> dict[str, Any]:
        model = series.model
        assert model is not None
        record = series.record
        spectrum = model.spectrum()
        coverage = model.coverage
        return {
            **summary(record),
            "params": canonical_params(record.params),
            "spacing": record.spacing_value(),
            "applied": series.applied,
            "is_fitted": model.is_fitted,
            "memory_size": model.memory_size,
            "coverage": finite(coverage) if coverage is not None else None,
            "spectrum": spectrum_rows(spectrum.summary()) if spectrum is not None else [],
        }


def spectrum_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "eigenvalue": [finite(x) for x in row["eigenvalue"]],
            "magnitude": finite(row["magnitude"]),
            "frequency": finite(row["frequency"]),
            "period": finite(row["period"]) if row["period"] is not None else None,
            "growth_rate": finite(row["growth_rate"]),
            "amplitude": finite(row["amplitude"]),
        }
        for row in rows
    ]


def summary(record: SeriesRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "n_observations": record.count,
        "last_t": record.last_t,
        "channels": list(record.channels) if record.channels is not None else None,
        "time_kind": record.time_kind,
        "created_at": record.created_at,
    }
