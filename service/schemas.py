"""Request and response bodies (pydantic v2): the API contract as OpenAPI shows it.

Observation bodies are parsed by `service.ingest` rather than by these models
(for speed, and to name the offending field precisely), but `ObservationBatch`
describes them for OpenAPI. Numbers in responses are never NaN: values that
could be non-finite are nullable.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: 1 to 128 of ``A-Za-z0-9._-`` (the length is checked apart), not made of dots only: ``.`` and
#: ``..`` are path segments that clients and proxies rewrite. Without look-ahead, which the
#: validator's regex engine lacks: a non-dot character must follow any leading dots.
SERIES_ID_PATTERN = r"^\.*[A-Za-z0-9_-][A-Za-z0-9._-]*$"

Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Timestamp = Annotated[
    str | float,
    Field(
        description="ISO-8601 string (naive times are UTC) or a number; one kind per series.",
        examples=["2011-01-01T00:00:00", 17.0],
    ),
]
Values = Annotated[
    list[float | None] | dict[str, list[float | None]],
    Field(description="One value per step, or one list per channel."),
]


# ------------------------------------------------------------------ series configuration
class ModelParams(BaseModel):
    """`EpisodicKoopman` parameters; omitted ones take the library's defaults.

    The service caps the parameters that size a model's memory (window, delays,
    capacity...) so that one series cannot exhaust the server.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    delays: int | None = Field(None, ge=1, le=256, strict=True)
    window: int | None = Field(None, ge=2, le=8192, strict=True)
    rank: int | float | Literal["gd"] | None = Field(
        None, description='An int >= 1, an energy fraction in (0, 1], or "gd".'
    )
    max_rank: int | None = Field(None, ge=1, le=256, strict=True)
    memory: bool | None = None
    strategy: Literal["mixture", "analog", "residual", "transfer"] | None = None
    experts: str | None = Field(
        None,
        max_length=200,
        description='Memory experts of the mixture, e.g. "analog,analog_last".',
    )
    episode_horizon: int | None = Field(None, ge=1, le=2048, strict=True)
    memory_stride: int | None = Field(None, ge=1, le=1_000_000, strict=True)
    stride: int | None = Field(None, ge=1, le=1_000_000, strict=True)
    stride_doublings: int | None = Field(None, ge=0, le=10, strict=True)
    stride_doubling_at: int | None = Field(None, ge=1, le=10**12, strict=True)
    top_k: int | None = Field(None, ge=1, le=256, strict=True)
    candidates: int | None = Field(None, ge=1, le=4096, strict=True)
    tau: Finite | None = Field(None, gt=0)
    recall_quantile: Finite | None = Field(None, ge=0, le=1)
    alignment: Literal["zscore", "additive", "multiplicative", "last", "none"] | None = None
    blend: Finite | None = Field(None, ge=0, le=1)
    mixture_rule: Literal["boa", "mlpoly", "hedge"] | None = None
    mixture_decay: Finite | None = Field(None, gt=0, le=1)
    mixture_eta: Finite | None = Field(None, gt=0)
    mixture_fast_decay: Finite | None = Field(None, ge=0, le=1)
    eigenvalue_weight: Finite | None = Field(None, ge=0)
    mode_weight: Finite | None = Field(None, ge=0)
    state_weight: Finite | None = Field(None, ge=0)
    capacity: int | None = Field(None, ge=1, le=200_000, strict=True)
    hnsw_threshold: int | None = Field(None, ge=1, le=10**9, strict=True)
    drift_gate: Literal["page_hinkley", "kswin"] | None = None
    gate_span: int | None = Field(None, ge=1, le=10**9, strict=True)
    level: Finite | None = Field(None, gt=0, lt=1)
    calibration_window: int | None = Field(None, ge=1, le=100_000, strict=True)
    early_grading: bool | None = None
    detrend: bool | None = None
    trend_gate: Finite | None = Field(
        None,
        gt=0,
        description="Detrend fits whose span rises by more than this many residual SDs "
        "(null: the default, 3; a huge value never detrends).",
    )
    classical_experts: str | None = Field(
        None,
        max_length=200,
        description='Classical experts, e.g. "last,seasonal,damped,ar" ("" for none).',
    )
    stabilize: Literal["clip", "none"] | None = None
    refit_every: int | None = Field(None, ge=1, le=10**9, strict=True)
    lifting: Literal["identity", "rff"] | None = None
    n_components: int | None = Field(None, ge=1, le=1024, strict=True)
    bandwidth: Finite | None = Field(None, gt=0)
    mode_delays: int | None = Field(None, ge=1, le=256, strict=True)
    state_delays: int | None = Field(None, ge=2, le=1024, strict=True)
    seed: int | None = Field(None, ge=0, le=2**32 - 1, strict=True)
    dt: Finite | None = Field(None, gt=0, description="Time units per step, for frequencies.")

    def given(self) -> dict[str, Any]:
        """The parameters the client set (explicit nulls mean "default")."""
        return self.model_dump(exclude_none=True)


class SeriesConfig(BaseModel):
    """Body of ``PUT /v1/series/{series_id}``."""

    model_config = ConfigDict(extra="forbid")

    params: ModelParams = Field(default_factory=ModelParams)


class SpectrumRow(BaseModel):
    eigenvalue: list[float | None]
    magnitude: float | None
    frequency: float | None
    period: float | None = Field(description="Steps (or time units, with dt) per cycle.")
    growth_rate: float | None
    amplitude: float | None


class SeriesSummary(BaseModel):
    id: str
    n_observations: int = Field(description="Acknowledged (durable) observations.")
    last_t: str | float | None
    channels: list[str] | None
    time_kind: Literal["iso", "number"] | None
    created_at: float


class SeriesInfo(SeriesSummary):
    params: dict[str, Any] = Field(description="Every model parameter, defaults filled in.")
    spacing: float | None = Field(
        description="Recent regular gap between observations (seconds for ISO times), if any."
    )
    applied: int = Field(description="Observations the model has learned.")
    is_fitted: bool
    memory_size: int
    coverage: float | None
    spectrum: list[SpectrumRow]


class SeriesPage(BaseModel):
    items: list[SeriesSummary]
    total: int
    offset: int
    limit: int


# ------------------------------------------------------------------ observations
class SeriesOverview(SeriesSummary):
    level: float = Field(description="The interval level `coverage` is measured at.")
    applied: int = Field(description="Observations the model has learned so far.")
    memory_size: int | None = Field(
        description="Recallable episodes; null while the model is loading or busy."
    )
    coverage: float | None = Field(
        description="Empirical coverage of the intervals issued so far (null before any)."
    )


class OverviewPage(BaseModel):
    items: list[SeriesOverview]
    total: int
    offset: int
    limit: int


class Observation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    t: Timestamp
    y: Finite | dict[str, Finite] = Field(
        description="A number, or an object of channel name to number (channels fixed by the "
        "series' first observation)."
    )


class ObservationBatch(BaseModel):
    """Body of a JSON push. As ``application/x-ndjson``, send one `Observation` per line."""

    model_config = ConfigDict(extra="forbid")

    observations: list[Observation]


class IngestResult(BaseModel):
    accepted: int = Field(description="New observations, durable when this response is sent.")
    duplicates: int = Field(description="Identical re-sends of stored observations (ignored).")
    last_t: str | float | None = Field(description="The series' newest timestamp.")
    n_observations: int


class StoredObservation(BaseModel):
    seq: int
    t: str | float
    y: float | dict[str, float]


class ObservationPage(BaseModel):
    items: list[StoredObservation]
    total: int
    offset: int
    limit: int


# ------------------------------------------------------------------ forecasts and memory
class RecalledEpisodeOut(BaseModel):
    id: int
    origin: int = Field(description="Index of the episode's last observation.")
    window_start: int = Field(description="Index of the first observation its fit saw.")
    span: list[str | float | None] = Field(
        description="Times of [window_start, origin, origin + episode_horizon] (null if unknown)."
    )
    distance: float | None
    weight: float | None


class ForecastOut(BaseModel):
    series_id: str
    n_observations: int = Field(description="Observations the forecast is based on.")
    last_t: str | float | None
    horizon: int
    level: float
    channels: list[str] | None
    timestamps: list[str | float] | None = Field(
        description="Times of the steps when the recent spacing is regular, else null."
    )
    mean: Values
    lower: Values
    upper: Values
    fallback: bool = Field(description="True before the first fit: the mean is the last value.")
    recall_applied: bool
    n_clipped: int = Field(
        description="Eigenvalues of the fit pulled onto the unit circle for this forecast "
        '(stabilize="clip"); 0 when none were, or before the first fit.'
    )
    recalled: list[RecalledEpisodeOut]
    spectrum: list[SpectrumRow]


class EpisodeOut(BaseModel):
    id: int
    source: int
    origin: int
    window_start: int
    span: list[str | float | None]
    rank: int
    frequencies: list[float | None]
    growth_rates: list[float | None]
    forecast: list[Any] | None = Field(
        description="What the operator forecast at the episode (per step; per channel); "
        "null unless the residual expert is used (only it needs them, so only then are they kept)."
    )
    realised: list[Any] = Field(description="What happened.")
    mae: float | None = Field(description="Mean absolute error of that forecast (null without it).")


class EpisodePage(BaseModel):
    items: list[EpisodeOut]
    total: int
    offset: int
    limit: int


class ErrorOut(BaseModel):
    detail: Any


class Health(BaseModel):
    status: str
    details: dict[str, Any] = Field(default_factory=dict)
