"""`EpisodicKoopman`: an online Koopman forecaster with an episodic memory.

This module validates parameters and input and wires the components
(`episodic_koopman.pipeline`); the components do the work and own the state.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
from river.time_series.base import Forecaster

from . import auto_embedding
from . import validation as v
from .auto_embedding import DelaySchedule
from .components import Component, State
from .config import MAX_FEATURES, MemoryConfig, ModelConfig, check_constructor
from .flat_params import CONSTRUCTOR_NAMES, join_flat, split_flat
from .forecast import Forecast, fallback_values, recalled_episodes
from .memory import EpisodeMemory
from .model_settings import Settings, check_layout
from .pipeline import Pipeline
from .rank import RankRule
from .spectrum import Spectrum
from .stream import Stream, missing_policy
from .threads import single_threaded

__all__ = ["MAX_FEATURES", "MAX_HORIZON", "EpisodicKoopman"]

#: Largest horizon a single forecast may ask for.
MAX_HORIZON = 100_000
_DEFAULT_CONFIG = ModelConfig()


class EpisodicKoopman(Forecaster):
    """Online Koopman (sliding-window DMD) forecaster with an episodic memory.

    The stream is standardised, delay-embedded (``delays`` lags per channel) and
    lifted. A rank-truncated DMD of the last ``window`` snapshots is kept up to
    date by O(m^2) rank-1 updates. Forecasts propagate its modes from the newest
    snapshot, with unstable eigenvalues pulled onto the unit circle.

    **Memory** (`MemoryConfig`). The present becomes an *episode* (spectral
    signature, normalised state, the operator's forecast and, ``episode_horizon``
    steps later, what followed). Forecasts recall episodes whose spectrum *and*
    state resemble the present and turn them into corrections (*analog*,
    *residual*, *transfer*), mixed with the plain forecast per step ahead by
    their realised errors.

    **Classical experts** (`ModelConfig.classical_experts`): the last value,
    seasonal naives at the detected periods, damped-trend exponential smoothing,
    a local AR, local ARs on the differences at the detected periods and the Theta
    method on the seasonally adjusted series join the mixture, weighted per step
    ahead by an online rule (`episodic_koopman.mixture`).

    Forecasts are scored every ``ModelConfig.stride_at(n)`` steps (8, growing to 32
    with the observation count): the mixture and the conformal intervals learn from
    their errors. A scored tick also takes the
    operator's eigendecomposition, which stays in force until the next one: in
    between, the plain forecast propagates that fit from the current delay state,
    and the memory is queried with it from the current state
    (`episodic_koopman.in_force`). Before the first fit (after
    `min_observations`), forecasts are the classical experts' mixture once one of
    them besides the last value can forecast, and the last value until then (0.0
    before any data; `Forecast.fallback` says so).

    Components own the state (`components`, wired by `episodic_koopman.pipeline`).

    Parameters
    ----------
    delays
        Lags per channel in the delay embedding, or ``None`` (the default) to choose
        them from the data: they grow with the series, so a short one gets a fit
        early (see `episodic_koopman.auto_embedding` and `current_delays`).
    window
        Snapshot pairs in the sliding DMD window.
    rank
        Truncation rule: an int, an energy fraction in (0, 1], or ``"gd"``
        (Gavish-Donoho optimal hard threshold). See `episodic_koopman.rank`.
    memory
        A `MemoryConfig`, or ``None`` for the same predictor without recall (a
        clean baseline).
    episode_horizon
        Steps each episode covers. Corrections, mixture weights and calibrated
        intervals cover this many steps; beyond it they are extended.
    level
        Level of the intervals issued at scored origins (and by default in `predict`).
    missing
        NaN/inf observations: ``"error"`` rejects them, ``"drop"`` leaves them out
        (counted in `n_missing`), ``"ffill"`` replaces them by the last finite value
        per channel (``"raise"`` and ``"skip"`` are accepted as old names).
    seed
        Seeds the random features and stochastic drift detectors.
    dt
        Time units per step, for reported frequencies and growth rates.
    config
        A `ModelConfig`: the operator's and the scoring's knobs (``None``: defaults).

    The flat form (`from_flat`, `to_flat`) names every knob at the top level.

    Examples
    --------
    >>> import numpy as np
    >>> from episodic_koopman import EpisodicKoopman
    >>> t = np.arange(400)
    >>> model = EpisodicKoopman(delays=16, window=64, memory=None)
    >>> model.learn_many(np.sin(2 * np.pi * t / 25))
    >>> [round(v, 3) for v in model.forecast(horizon=3)]
    [0.0, 0.249, 0.482]
    >>> f = model.predict(horizon=3)
    >>> round(f.spectrum.summary()[0]["period"], 3)
    25.0
    """

    def __init__(
        self,
        delays: int | None = None,
        window: int = 256,
        rank: RankRule = "gd",
        memory: MemoryConfig | None = MemoryConfig(),  # noqa: B008 (frozen, compared by value)
        episode_horizon: int = 24,
        level: float = 0.9,
        missing: str = "error",
        seed: int = 0,
        dt: float = 1.0,
        config: ModelConfig | None = None,
    ) -> None:
        self.delays = delays
        self.window = window
        self.rank = rank
        self.memory = memory
        self.episode_horizon = episode_horizon
        self.level = level
        self.missing = missing_policy(missing)
        self.seed = seed
        self.dt = dt
        self.config = config
        check_constructor(delays, window, rank, memory, episode_horizon, level, seed, dt, config)
        self._reset()

    @property
    def _cfg(self) -> ModelConfig:
        return self.config if self.config is not None else _DEFAULT_CONFIG

    # ------------------------------------------------------------------ flat form
    @classmethod
    def from_flat(cls, params: dict[str, Any]) -> EpisodicKoopman:
        """A model from flat parameters: every knob at the top level, as `to_flat` gives.

        This is the form of the service's ``params`` and the CLI's ``--param k=v``.
        ``memory`` is a bool there; unknown names are rejected, naming the valid ones.

        >>> EpisodicKoopman.from_flat({"delays": 8, "memory_stride": 2}).memory.stride
        2
        """
        return cls(**split_flat(params))

    def to_flat(self) -> dict[str, Any]:
        """Every parameter under its flat name (JSON-safe; see `from_flat`)."""
        own = {name: getattr(self, name) for name in CONSTRUCTOR_NAMES}
        return join_flat(own, self.memory, self._cfg)

    @classmethod
    def _unit_test_params(cls):
        yield {"delays": 8, "window": 32}

    # ------------------------------------------------------------------ state
    def _reset(self) -> None:
        self._stream = Stream()
        self._pipeline: Pipeline | None = None  # built at the first observation
        self._attached_memory: EpisodeMemory | None = getattr(self, "_attached_memory", None)
        self._source: int = getattr(self, "_source", 0)
        self._delays = DelaySchedule(self.delays, shared=self._attached_memory is not None)

    @property
    def current_delays(self) -> int:
        """The delays in force: ``delays``, or those the automatic embedding chose so far."""
        return self._delays.current

    @property
    def _settings(self) -> Settings:
        own = (self.current_delays, self.window, self.rank, self.episode_horizon)
        return Settings(*own, self.level, self.seed, self.memory, self._cfg)

    @property
    def _final_settings(self) -> Settings:
        """The settings at the last stage of an automatic embedding (else `_settings`)."""
        if self.delays is not None:
            return self._settings
        return dataclasses.replace(self._settings, delays=auto_embedding.final_delays())

    def _setup(self, n_channels: int) -> Pipeline:
        memory, settings = self._attached_memory, self._settings
        if memory is None and self.memory is not None:
            memory = settings.empty_memory(n_channels)
            memory.holds_copies = False  # its own: episodes refer to this model's history
        self._pipeline = Pipeline(settings, n_channels, self._stream, memory, self._source)
        return self._pipeline

    def get_state(self) -> State:
        """The stream's part of the learned state (the rest is in `components`).

        Episodes are brought up to date first (as any read does), so the state is
        canonical: two models that learned the same observations give the same state.
        """
        if self._pipeline is not None:
            self._pipeline.catch_up()
        meta, arrays = self._stream.get_state()
        own = {"ready": self._pipeline is not None, "auto_delays": self._delays.auto}
        return meta | own, arrays

    def set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Restore the stream's part and rebuild the components (then restore `components`)."""
        self._reset()
        if self.delays is None:  # files from before automatic embeddings had given delays
            self._delays.adopt(int(meta["auto_delays"]))
        self._stream.set_state(meta, arrays)
        if meta["ready"]:
            channels = self._stream.channels
            self._setup(len(channels) if channels is not None else 1)

    def components(self) -> dict[str, Component]:
        """The stateful components by name (none before the first observation)."""
        return {} if self._pipeline is None else self._pipeline.components()

    def _read(self) -> Pipeline | None:
        """The pipeline with its episodes up to date, for a read (``None`` before data)."""
        if self._pipeline is not None:
            self._pipeline.catch_up()
        return self._pipeline

    # ------------------------------------------------------------------ public API
    @property
    def n_observations(self) -> int:
        """Observations learned (dropped missing values excluded)."""
        return self._stream.n

    @property
    def n_missing(self) -> int:
        """Observations dropped or forward-filled under the ``missing`` policy."""
        return self._stream.n_missing

    @property
    def channels(self) -> list[str] | None:
        """Channel names (``None`` for a single series)."""
        channels = self._stream.channels
        return list(channels) if channels is not None else None

    @property
    def is_fitted(self) -> bool:
        """Whether an operator has been fitted (before that, see `min_observations`)."""
        return self._pipeline is not None and self._pipeline.is_fitted

    @property
    def episode_memory(self) -> EpisodeMemory | None:
        """The memory episodes are stored in (``None`` without memory or before learning)."""
        recaller = self._pipeline.recaller if self._pipeline is not None else None
        return recaller.memory if recaller is not None else None

    @property
    def memory_size(self) -> int:
        """Episodes stored in memory (recallable)."""
        pipeline = self._read()
        return 0 if pipeline is None or pipeline.recaller is None else len(pipeline.recaller.memory)

    @property
    def coverage(self) -> float | None:
        """Empirical coverage of the intervals issued at scored origins (at ``level``)."""
        pipeline = self._read()
        return None if pipeline is None else pipeline.calibrator.coverage()

    def expert_weights(self) -> dict[str, list[float]] | None:
        """The mixture's current weight of each expert per step ahead (``None`` if no mixture).

        Weights assume every expert can forecast; an expert without a recall at
        some origin gets no weight there and the others share it.
        """
        pipeline = self._read()
        return None if pipeline is None else pipeline.combiner.expert_weights(self.episode_horizon)

    @property
    def min_observations(self) -> int:
        """Observations needed before the first fit.

        Until then, forecasts come from the classical experts (or are the last value
        while they cannot forecast either).
        """
        start = self._delays.start()  # an automatic embedding fits first at its first stage
        delays = start if start is not None else self.current_delays
        return delays + min(self.window, 2 * delays)

    def new_memory(self, n_channels: int = 1) -> EpisodeMemory:
        """An empty memory that models with these parameters (and channel count) can share.

        >>> from episodic_koopman import EpisodicKoopman
        >>> a, b = EpisodicKoopman(delays=8, window=32), EpisodicKoopman(delays=8, window=32)
        >>> shared = a.new_memory()
        >>> a.attach_memory(shared, source=0); b.attach_memory(shared, source=1)
        """
        v.check_positive_int("n_channels", n_channels, 1, MAX_FEATURES)
        if self.memory is None:
            raise ValueError("this model was built with memory=None")
        # A model sharing it keeps the last stage of an automatic embedding throughout.
        return self._final_settings.empty_memory(n_channels)

    def attach_memory(self, memory: EpisodeMemory, source: int = 0) -> None:
        """Store episodes in, and recall them from, ``memory``: possibly shared by many models.

        Call before the first observation. Episodes are scale-free (normalised
        states, level-aligned replays, errors in units of each series' scale), so
        models of series on different scales can share one memory; each episode
        records ``source`` to say which model stored it. A saved model keeps a copy
        of the memory it used. A shared memory holds copies of each episode's windows
        (a model's own memory holds only references into its history), so it costs
        more per episode.
        """
        if self._pipeline is not None:
            raise ValueError("attach_memory must be called before the model learns anything")
        if self.memory is None:
            raise ValueError("this model was built with memory=None")
        v.check_positive_int("source", source, 0, 2**62)
        if not memory.holds_copies:
            raise ValueError(
                "this memory refers to its model's own history and cannot be shared; "
                "share a memory made by new_memory()"
            )
        self._attached_memory = memory
        self._source = int(source)
        self._delays = DelaySchedule(self.delays, shared=True)

    def learn_one(self, y: float | dict[str, float], x: dict | None = None) -> None:
        """Learn one observation: a number, or a dict of channel to number.

        ``x`` (exogenous features, as river's evaluation passes) is accepted and ignored.
        """
        stream, pipeline = self._stream, self._pipeline
        if pipeline is not None and stream.scalar and (type(y) is float or type(y) is int):
            # Fast path for the common case: the same checks in plain Python (a third of
            # the cost of a step went to NumPy overhead on one-element arrays).
            value = float(y)
            if math.isfinite(value) and abs(value) <= v.MAX_ABS_VALUE:
                pipeline.step(np.array([value]), owned=True)
                if stream.n == self._delays.tick:
                    self._grow()
                return
        values, channels, scalar = v.coerce_observation(y, stream.channels, stream.scalar)
        self._learn_rows(values[None, :], channels, scalar, batch=False)

    def learn_many(self, values: Any) -> None:
        """Learn a batch in order; the same result as a loop of `learn_one`.

        ``values``: a sequence or 1-D array (single series), a sequence of dicts,
        a dict of channel to 1-D array, or a 2-D array whose columns are the
        model's channels. The whole batch is validated before anything is learned.
        """
        array, channels, scalar = v.coerce_many(values, self._stream.channels, self._stream.scalar)
        if array.shape[0] > 0:
            self._learn_rows(array, channels, scalar, batch=True)

    def forecast(self, horizon: int, xs: list[dict] | None = None) -> list[Any]:
        """Point forecasts for steps ``1..horizon``: floats, or dicts for channels."""
        pipeline = self._pipeline
        if pipeline is None or not pipeline.is_fitted:
            mean = self.predict(horizon).mean
        else:
            # The mean alone (what `predict` returns, without intervals, spectrum or the
            # recalled episodes' summaries, which a point forecast drops).
            horizon = v.check_horizon(horizon, MAX_HORIZON)
            with single_threaded():
                mean = self._shape(pipeline.point_forecast(horizon))
        channels = self.channels
        if channels is None:
            return mean.tolist()
        return [dict(zip(channels, row, strict=True)) for row in mean.tolist()]

    def predict(self, horizon: int, level: float | None = None) -> Forecast:
        """Forecast with intervals, the recalled episodes and the current spectrum."""
        horizon = v.check_horizon(horizon, MAX_HORIZON)
        level = self.level if level is None else v.check_fraction("level", level)
        pipeline = self._pipeline
        if pipeline is None or not pipeline.is_fitted:
            early = pipeline.issuer.early_forecast(horizon, level) if pipeline else None
            if early is None:
                return self._fallback(horizon, level)
            mean, half = early  # the classical experts, while the operator waits for data
            shape = self._shape
            return Forecast(
                shape(mean), shape(mean - half), shape(mean + half), level, self.channels
            )
        with single_threaded():
            mean, half, fit, recall = pipeline.forecast(horizon, level)
            spectrum = pipeline.dyn.spectrum(fit, float(self.dt))
        return Forecast(
            mean=self._shape(mean),
            lower=self._shape(mean - half),
            upper=self._shape(mean + half),
            level=level,
            channels=self.channels,
            recalled=recalled_episodes(recall),
            recall_applied=bool(recall is not None and recall.admitted),
            spectrum=spectrum,
            n_clipped=pipeline.dyn.n_clipped(fit),
        )

    def reference_forecast(self, horizon: int) -> np.ndarray:
        """The plain forecast from an exact SVD refit, ``(horizon, c)``.

        The refit is of the window the fit in force was taken on: the last scored tick
        (every ``ModelConfig.stride_at(n)`` observations), or an exact refit since. It is
        propagated from the current delay state. For verification: it equals the
        incrementally maintained operator's plain forecast to rounding (the memory
        plays no part in either). At a scored tick that window is the current one.
        """
        horizon = v.check_horizon(horizon, MAX_HORIZON)
        if self._pipeline is None or not self._pipeline.is_fitted:
            raise ValueError("the model has no fit yet")
        with single_threaded():
            return self._pipeline.issuer.reference_forecast(horizon)

    def spectrum(self) -> Spectrum | None:
        """The spectrum forecasts use (``None`` before the first fit): the fit in force,
        taken at the last scored tick (or exact refit), with the current state's
        amplitudes."""
        pipeline = self._pipeline
        if pipeline is None or not pipeline.is_fitted:
            return None
        fit = pipeline.in_force.fit
        assert fit is not None
        with single_threaded():
            return pipeline.dyn.spectrum(fit, float(self.dt))

    def episodes(self, offset: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """Browse the memory, oldest first: JSON-safe summaries of stored episodes."""
        offset = v.check_positive_int("offset", offset, 0)
        limit = v.check_positive_int("limit", limit, 1, 10_000)
        pipeline = self._read()
        if pipeline is None or pipeline.recaller is None:
            return []
        return pipeline.recaller.browse(offset, limit, self.dt)

    def save(self, path: str | Path) -> None:
        """Save to a single versioned file (JSON + npz + FAISS index; no pickle)."""
        from .persistence import save_model

        save_model(self, path)

    @classmethod
    def load(cls, path: str | Path) -> EpisodicKoopman:
        """Load a model saved by `save`; it forecasts bit-identically."""
        from .persistence import load_model

        model = load_model(path)
        if not isinstance(model, cls):
            raise ValueError(f"{path} holds a {type(model).__name__}, not a {cls.__name__}")
        return model

    # ------------------------------------------------------------------ learning
    def _learn_rows(
        self, rows: np.ndarray, channels: list[str] | None, scalar: bool, batch: bool
    ) -> None:
        """Validate and learn coerced rows; nothing changes if any check fails."""
        kept, n_affected = self._stream.apply_missing(rows, self.missing)
        self._check_layout(rows.shape[1])
        self._stream.n_missing += n_affected
        if kept.shape[0] == 0:
            return
        if self._stream.scalar is None:
            self._stream.scalar, self._stream.channels = scalar, channels
        pipeline = self._pipeline or self._setup(rows.shape[1])
        stream = self._stream
        if not batch:
            pipeline.step(kept[0])
            if stream.n == self._delays.tick:
                self._grow()
            return
        with single_threaded():  # pinned once for the batch rather than at every step
            for row in kept:
                pipeline.step(row)
                if stream.n == self._delays.tick:
                    self._grow()
                    pipeline = self._pipeline

    def _grow(self) -> None:
        """At a tick of the automatic embedding: rebuild with the next delays, replaying history.

        The rebuilt model is then exactly the model with those delays fixed, fed the
        same observations. A history too short to replay (a tiny ``window`` without
        classical experts) keeps the delays in force.
        """
        stream, pipeline = self._stream, self._pipeline
        assert pipeline is not None and self._delays.auto is not None
        n = stream.n
        history = pipeline.obs.history
        if history.length < n:
            self._delays.tick = None  # (after a load, the tick is past: it does not come again)
            return
        rows = history.last(n).copy()
        self._delays.adopt(auto_embedding.stage_delays(n))
        stream.n = 0
        fresh = self._setup(rows.shape[1])
        with single_threaded():
            for row in rows:
                fresh.step(row)

    def _check_layout(self, n_channels: int) -> None:
        """Reject a channel count the model cannot hold, before anything changes."""
        if self._pipeline is None:  # an automatic embedding must hold its last stage too
            check_layout(self._final_settings, n_channels, self._attached_memory)

    def _fallback(self, horizon: int, level: float) -> Forecast:
        """Before the first fit: the last value, with a Gaussian interval when possible."""
        stream, pipeline = self._stream, self._pipeline
        n_channels = len(stream.channels) if stream.channels else 1
        last = stream.last_finite if stream.last_finite is not None else np.zeros(n_channels)
        scale = pipeline.obs.scaler.current()[1] if stream.n >= 2 and pipeline else None
        mean, lower, upper = fallback_values(last, horizon, level, scale)
        shape = self._shape
        return Forecast(
            shape(mean), shape(lower), shape(upper), level, self.channels, fallback=True
        )

    def _shape(self, values: np.ndarray) -> np.ndarray:
        return values[:, 0].copy() if self._stream.channels is None else values.copy()
