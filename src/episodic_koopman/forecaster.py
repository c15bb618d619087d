"""`EpisodicKoopman`: an online Koopman forecaster with an episodic memory."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
from river.time_series.base import Forecaster

from . import validation as v
from .combiner import Combiner
from .components import ArraysOnly, Component, State
from .config import (
    CONSTRUCTOR_NAMES,
    MAX_FEATURES,
    MemoryConfig,
    ModelConfig,
    join_flat,
    split_flat,
)
from .dynamics import Dynamics
from .embedding import make_lifting
from .forecast import Forecast, recalled_episodes
from .intervals import ConformalCalibrator
from .memory import EpisodeMemory
from .observables import Observables
from .operator import KoopmanFit
from .rank import RankRule, validate_rank_rule
from .recall import (
    DriftGate,
    KeyWeights,
    RecallContext,
    key_dimension,
)
from .recaller import Query, Recall, Recaller
from .recorder import EpisodeRecorder
from .scorer import ForecastScorer, PendingScore
from .spectrum import Spectrum
from .stream import Stream, missing_policy
from .threads import single_threaded

__all__ = ["MAX_FEATURES", "EpisodicKoopman", "Forecast", "MemoryConfig", "ModelConfig"]

#: Largest horizon a single forecast may ask for.
MAX_HORIZON = 100_000
_DEFAULT_CONFIG = ModelConfig()


@dataclass(frozen=True)
class _Present:
    """Everything derived from the state at one tick (cached until the next update)."""

    n: int
    fit: KoopmanFit
    query: Query | None  # only with a memory
    recall: Recall | None


class EpisodicKoopman(Forecaster):
    """Online Koopman (sliding-window DMD) forecaster with an episodic memory.

    The stream is standardised, delay-embedded (``delays`` lags per channel) and
    lifted. A rank-truncated DMD of the last ``window`` snapshots is kept up to
    date by O(m^2) rank-1 updates. Forecasts propagate its modes from the newest
    snapshot, with unstable eigenvalues pulled onto the unit circle.

    **Memory** (`MemoryConfig`). Every few steps the present becomes an *episode*:
    the spectral signature of the latest fit, the state (the normalised delay
    window), the operator's forecast and, once ``episode_horizon`` steps have
    passed, what really followed. A forecast recalls the episodes whose spectrum
    *and* state resemble the present, weighted by attention, and turns them into
    corrections: *analog* (replay what followed, aligned to the present),
    *residual* (add the errors their operators made), *transfer* (propagate the
    present with the operator fitted after them). By default a mixture weighs the
    plain forecast and these experts per step ahead by their realised errors, so
    memory takes over where it predicts better and steps back where it does not.

    Forecasts are scored every ``ModelConfig.stride`` steps: the mixture and the
    conformal intervals learn from their errors. Before the first fit (after
    `min_observations`), `forecast` returns the last value (0.0 before any data).

    The model is wired from components that each own their state (see
    `components`): observables, operator, intervals, scorer, combiner and, with
    memory, recall and recorder.

    Parameters
    ----------
    delays
        Lags per channel in the delay embedding.
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
    >>> EpisodicKoopman.from_flat({"delays": 8, "capacity": 4000}).memory.capacity
    4000
    """

    def __init__(
        self,
        delays: int = 32,
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
        self._check_params()
        self._reset()

    def _check_params(self) -> None:
        v.check_positive_int("delays", self.delays, 1, MAX_FEATURES)
        v.check_positive_int("window", self.window, 2, 1_000_000)
        validate_rank_rule(self.rank)
        if self.memory is not None and not isinstance(self.memory, MemoryConfig):
            raise TypeError(
                f"memory must be a MemoryConfig or None, got {self.memory!r} (memory=False "
                "is now memory=None; the flat form still takes a bool)"
            )
        if self.config is not None and not isinstance(self.config, ModelConfig):
            raise TypeError(f"config must be a ModelConfig or None, got {self.config!r}")
        v.check_positive_int("episode_horizon", self.episode_horizon, 1, 100_000)
        v.check_fraction("level", self.level)
        v.check_positive_int("seed", self.seed, 0, 2**32 - 1)
        if not v.is_real_number(self.dt) or not (0 < float(self.dt) < math.inf):
            raise ValueError(f"dt must be a positive finite number, got {self.dt!r}")
        state_delays = self.memory.state_delays if self.memory is not None else None
        if state_delays is not None and state_delays > self.window:
            raise ValueError(f"state_delays must be <= window ({self.window}), got {state_delays}")

    @property
    def _cfg(self) -> ModelConfig:
        return self.config if self.config is not None else _DEFAULT_CONFIG

    @property
    def _state_delays(self) -> int:
        state_delays = self.memory.state_delays if self.memory is not None else None
        return state_delays or self.delays

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
        self._ready = False  # components are built at the first observation
        self._present_cache: _Present | None = None
        self._attached_memory: EpisodeMemory | None = getattr(self, "_attached_memory", None)
        self._source: int = getattr(self, "_source", 0)

    def _setup(self, n_channels: int) -> None:
        """Build the components once the number of channels is known."""
        d, c, cfg, mem = self.delays, n_channels, self._cfg, self.memory
        lifting = make_lifting(cfg.lifting, cfg.n_components, cfg.bandwidth, self.seed)
        state_delays = self._state_delays
        # Batched episodes read back up to `stride` steps beyond a state or a continuation.
        history_length = max(
            self.window + d,
            self.episode_horizon + cfg.stride + 1,
            state_delays + cfg.stride + 1,
        )
        self._obs = Observables(d, c, history_length, lifting)
        refit_every = cfg.refit_every if cfg.refit_every is not None else self.window
        self._dyn = Dynamics(
            self._obs.n_features,
            self.window,
            self.rank,
            cfg.max_rank,
            d,
            refit_every,
            cfg.stabilize,  # type: ignore[arg-type]
        )
        self._calibrator = ConformalCalibrator(self.episode_horizon, c, cfg.calibration_window)
        self._scorer = ForecastScorer(self.episode_horizon)
        self._recaller: Recaller | None = None
        self._recorder: EpisodeRecorder | None = None
        if mem is None:
            # The plain forecast alone (a one-expert mixture is the plain forecast).
            self._combiner = Combiner([], "zscore", 1.0, self.episode_horizon, None)
            self._ready = True
            return
        mixture = (mem.mixture_decay, mem.mixture_eta, mem.mixture_fast_decay)
        self._combiner = Combiner(
            mem.expert_names(),
            mem.alignment,  # type: ignore[arg-type]
            mem.blend,
            self.episode_horizon,
            mixture if mem.strategy == "mixture" else None,
        )
        weights = KeyWeights(mem.eigenvalue_weight, mem.mode_weight, mem.state_weight)
        memory = self._attached_memory
        if memory is None:
            memory = self.new_memory(c)
        gate = DriftGate(mem.drift_gate, mem.gate_span, self.seed) if mem.drift_gate else None
        self._recaller = Recaller(
            memory,
            weights,
            cfg.max_rank,
            self._mode_length_for(c),
            state_delays,
            mem.candidates,
            mem.top_k,
            mem.tau,
            mem.recall_quantile,
            gate,
        )
        self._recorder = EpisodeRecorder(
            memory,
            weights,
            self.episode_horizon,
            mem.stride,
            state_delays,
            successor=self._combiner.needs_successor,
        )
        self._recorder.source = self._source
        self._ready = True

    def _mode_length_for(self, n_channels: int) -> int:
        """Coordinates per mode in a signature: the newest ``mode_delays`` of each channel."""
        assert self.memory is not None
        return min(self.memory.mode_delays, self.delays) * n_channels

    def _key_dimension(self, n_channels: int) -> int:
        assert self.memory is not None
        # With a zero mode weight, modes stay in the episodes but out of the FAISS key.
        key_modes = self._mode_length_for(n_channels) if self.memory.mode_weight > 0 else 0
        state_length = self._state_delays * n_channels
        return key_dimension(self._cfg.max_rank, key_modes, state_length)

    # ------------------------------------------------------------------ state, by component
    def get_state(self) -> State:
        """The stream's part of the learned state (the rest is in `components`).

        Episodes are brought up to date first (as any read does), so the state is
        canonical: two models that learned the same observations give the same state.
        """
        self._catch_up()
        meta, arrays = self._stream.get_state()
        return meta | {"ready": self._ready}, arrays

    def set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Restore the stream's part and rebuild the components (then restore `components`)."""
        self._reset()
        self._stream.set_state(meta, arrays)
        if meta["ready"]:
            channels = self._stream.channels
            self._setup(len(channels) if channels is not None else 1)

    def components(self) -> dict[str, Component]:
        """The stateful components by name (none before the first observation)."""
        if not self._ready:
            return {}
        parts: dict[str, Component] = {
            "observables": self._obs,
            "operator": self._dyn,
            "intervals": ArraysOnly(self._calibrator),
            "scorer": self._scorer,
            "combiner": self._combiner,
        }
        if self._recaller is not None and self._recorder is not None:
            parts |= {"recall": self._recaller, "recorder": self._recorder}
        return parts

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
        """Whether an operator has been fitted (before that, forecasts are the last value)."""
        return self._ready and self._dyn.ready_at is not None

    @property
    def episode_memory(self) -> EpisodeMemory | None:
        """The memory episodes are stored in (``None`` without memory or before learning)."""
        return self._recaller.memory if self._ready and self._recaller is not None else None

    @property
    def memory_size(self) -> int:
        """Episodes stored in memory (recallable)."""
        if not self._ready or self._recaller is None:
            return 0
        self._catch_up()
        return len(self._recaller.memory)

    @property
    def coverage(self) -> float | None:
        """Empirical coverage of the intervals issued at scored origins (at ``level``)."""
        if not self._ready:
            return None
        self._catch_up()
        return self._calibrator.coverage()

    def expert_weights(self) -> dict[str, list[float]] | None:
        """The mixture's current weight of each expert per step ahead (``None`` if no mixture).

        Weights assume every expert can forecast; an expert without a recall at
        some origin gets no weight there and the others share it.
        """
        if not self._ready or self._combiner.mixture is None:
            return None
        self._catch_up()
        return self._combiner.expert_weights(self.episode_horizon)

    @property
    def min_observations(self) -> int:
        """Observations needed before the first fit (until then, forecasts are the last value)."""
        return self.delays + min(self.window, 2 * self.delays)

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
        return EpisodeMemory(
            self._key_dimension(n_channels),
            capacity=self.memory.capacity,
            hnsw_threshold=self.memory.hnsw_threshold,
        )

    def attach_memory(self, memory: EpisodeMemory, source: int = 0) -> None:
        """Store episodes in, and recall them from, ``memory``: possibly shared by many models.

        Call before the first observation. Episodes are scale-free (normalised
        states, level-aligned replays, errors in units of each series' scale), so
        models of series on different scales can share one memory; each episode
        records ``source`` to say which model stored it. A saved model keeps a copy
        of the memory it used.
        """
        if self._ready:
            raise ValueError("attach_memory must be called before the model learns anything")
        if self.memory is None:
            raise ValueError("this model was built with memory=None")
        v.check_positive_int("source", source, 0, 2**62)
        self._attached_memory = memory
        self._source = int(source)

    def learn_one(self, y: float | dict[str, float], x: dict | None = None) -> None:
        """Learn one observation: a number, or a dict of channel to number.

        ``x`` (exogenous features, as river's evaluation passes) is accepted and
        ignored.
        """
        stream = self._stream
        if self._ready and stream.scalar and (type(y) is float or type(y) is int):
            # Fast path for the common case: the same checks in plain Python (a third of
            # the cost of a step went to NumPy overhead on one-element arrays).
            value = float(y)
            if math.isfinite(value) and abs(value) <= v.MAX_ABS_VALUE:
                self._step(np.array([value]))
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
        if array.shape[0] == 0:
            return
        self._learn_rows(array, channels, scalar, batch=True)

    def forecast(self, horizon: int, xs: list[dict] | None = None) -> list[Any]:
        """Point forecasts for steps ``1..horizon``: floats, or dicts for channels."""
        result = self.predict(horizon)
        if result.channels is None:
            return [float(m) for m in result.mean]
        return [{ch: float(row[j]) for j, ch in enumerate(result.channels)} for row in result.mean]

    def predict(self, horizon: int, level: float | None = None) -> Forecast:
        """Forecast with intervals, the recalled episodes and the current spectrum."""
        horizon = v.check_horizon(horizon, MAX_HORIZON)
        level = self.level if level is None else v.check_fraction("level", level)
        if not self.is_fitted:
            return self._fallback(horizon, level)
        with single_threaded():
            self._flush(upto=self._stream.n - 1)
            present = self._present()
            mean, spread, _, _ = self._combine(present, horizon)
            half = self._calibrator.half_width(
                level, spread, horizon, self._obs.scaler.current()[1]
            )
            spectrum = self._dyn.spectrum(present.fit, float(self.dt))
        recall = present.recall
        return Forecast(
            mean=self._shape(mean),
            lower=self._shape(mean - half),
            upper=self._shape(mean + half),
            level=level,
            channels=self.channels,
            recalled=recalled_episodes(recall),
            recall_applied=bool(recall is not None and recall.admitted),
            spectrum=spectrum,
            n_clipped=self._dyn.n_clipped(present.fit),
        )

    def reference_forecast(self, horizon: int) -> np.ndarray:
        """The plain forecast from an exact SVD refit of the current window, ``(horizon, c)``.

        For verification: it equals the incrementally maintained operator's plain
        forecast to rounding (the memory plays no part in either).
        """
        from .operator import batch_dmd

        horizon = v.check_horizon(horizon, MAX_HORIZON)
        if not self.is_fitted:
            raise ValueError("the model has no fit yet")
        with single_threaded():
            snaps = self._dyn.dmd.snapshots()
            fit = batch_dmd(snaps[:-1].T, snaps[1:].T, self.rank, self._cfg.max_rank)
            readout = self._obs.embedding.readout
            path = fit.propagate(snaps[-1], horizon, readout, self._dyn.stabilize)
        return self._obs.to_raw(path)

    def spectrum(self) -> Spectrum | None:
        """The current fit's spectrum (``None`` before the first fit)."""
        if not self.is_fitted:
            return None
        with single_threaded():
            return self._dyn.spectrum(self._present().fit, float(self.dt))

    def episodes(self, offset: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """Browse the memory, oldest first: JSON-safe summaries of stored episodes."""
        offset = v.check_positive_int("offset", offset, 0)
        limit = v.check_positive_int("limit", limit, 1, 10_000)
        if not self._ready or self._recaller is None:
            return []
        self._catch_up()
        return self._recaller.browse(offset, limit, self.dt)

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
        if not self._ready:
            self._setup(rows.shape[1])
        if not batch:
            self._step(kept[0])
            return
        with single_threaded():  # pinned once for the batch rather than at every step
            for row in kept:
                self._step(row)

    def _check_layout(self, n_channels: int) -> None:
        """Reject a channel count the model cannot hold, before anything changes."""
        if self._ready:
            return
        n_inputs = self.delays * n_channels
        n_features = n_inputs + self._cfg.n_lifted
        if n_features > MAX_FEATURES:
            raise ValueError(
                f"delays x channels (+ lifted features) = {n_features} exceeds {MAX_FEATURES}; "
                "use fewer delays or channels"
            )
        if self._attached_memory is not None:
            dim = self._key_dimension(n_channels)
            if self._attached_memory.dim != dim:
                raise ValueError(
                    f"attached memory has keys of length {self._attached_memory.dim}, this "
                    f"model needs {dim}: models sharing a memory need the same delays, "
                    "channel count, max_rank, mode_weight and mode_delays"
                )

    def _step(self, values: np.ndarray) -> None:
        """Learn one validated observation."""
        stream, obs, dyn = self._stream, self._obs, self._dyn
        stream.last_finite = values.copy()
        obs.observe(values)
        stream.n += 1
        n = stream.n
        if n < self.delays:
            return
        if obs.ref_mean is None:
            obs.anchor()
        dyn.push(obs.newest())
        refit = dyn.refit_due(n)
        if dyn.ready_at is None:
            return
        since = n - dyn.ready_at
        if since == 0 and self._recorder is not None:
            self._recorder.cursor = n - 1
        scored = since % self._cfg.stride == 0
        if not (refit or scored):
            return  # the episodes of the steps in between are made in one batch, later
        # Only these steps run LAPACK (and refits BLAS level 3): pin threads for them.
        with single_threaded():
            # Episodes up to the previous observation belong to the fit and standardisation
            # in force until now: bring them up to date before either changes.
            self._flush(upto=n - 2)
            if refit:  # refresh the standardisation and refit the window exactly
                obs.anchor()
                dyn.dmd.replace_snapshots(obs.snapshots(dyn.dmd.n_snapshots))
            if scored:
                present = self._present(observe=True)
                if self._recorder is not None and present.query is not None:
                    self._recorder.remember(present.fit, present.query.signature)
                self._open_score(present)

    def _catch_up(self) -> None:
        """Make and file the episodes of every observation so far (see `_flush`)."""
        if self.is_fitted:
            with single_threaded():
                self._flush(upto=self._stream.n - 1)

    def _flush(self, upto: int) -> None:
        """Bring episodes up to date, in batches.

        Make the episodes of origins up to ``upto``, score pending forecasts against
        every observation since they were last scored, and file episodes whose
        continuation is complete into memory. This runs at every scored step and
        refit, and before any read. The result does not depend on when it runs:
        each piece is a function of the state at its origin, and every update lands
        in the order the observations came.
        """
        ready_at = self._dyn.ready_at
        if ready_at is None:
            return
        n, obs, dyn = self._stream.n, self._obs, self._dyn
        if self._recorder is not None:
            self._recorder.make(upto, n, ready_at, obs, dyn)
        gate = self._recaller.gate if self._recaller is not None else None
        self._scorer.advance(n - 1, obs.history, self._combiner.learner, gate, self._calibrator)
        if self._recorder is not None:
            self._recorder.file(n, obs, dyn)

    def _open_score(self, present: _Present) -> None:
        """Issue a forecast at this origin, to be scored when its horizon has passed."""
        horizon, obs = self.episode_horizon, self._obs
        issued, spread, tracks, available = self._combine(present, horizon)
        half = self._calibrator.half_width(self.level, spread, horizon, obs.scaler.current()[1])
        assert obs.ref_scale is not None
        self._scorer.open(
            PendingScore(
                origin=self._stream.n - 1,
                tracks=tracks,
                available=available,
                issued=issued,
                spread=spread,
                lower=issued - half,
                upper=issued + half,
                ref_scale=obs.ref_scale.copy(),
                realised=np.zeros_like(issued),
            )
        )

    # ------------------------------------------------------------------ forecasting
    def _present(self, observe: bool = False) -> _Present:
        """Fit, query and recall at the current tick (cached per tick).

        ``observe`` (scored ticks only) feeds the best match distance to the
        adaptive threshold before deciding, so a `predict` at the same tick agrees
        with the forecast that was scored.
        """
        n = self._stream.n
        cached = self._present_cache
        if cached is not None and cached.n == n and not observe:
            return cached
        fit = self._dyn.fit()
        query = recall = None
        if self._recaller is not None:
            obs = self._obs
            query = self._recaller.query(fit, self._dyn.dmd.newest(), obs.embedding, obs.history)
            recall = self._recaller.recall(query, n - 1, observe)
        present = _Present(n, fit, query, recall)
        self._present_cache = present
        return present

    def _combine(
        self, present: _Present, steps: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every expert's forecast and their combination (see `Combiner.combine`)."""
        obs = self._obs
        readout = obs.embedding.readout
        plain = obs.to_raw(self._dyn.propagate(present.fit, steps, readout))

        def context() -> RecallContext:
            assert obs.ref_mean is not None and obs.ref_scale is not None
            return RecallContext(
                plain=plain,
                history=obs.history.last(max(self.delays, self._state_delays)),
                ref_mean=obs.ref_mean,
                ref_scale=obs.ref_scale,
                lift=obs.lift,
                readout=readout,
                stabilize=self._dyn.stabilize,
            )

        return self._combiner.combine(plain, present.recall, context)

    def _fallback(self, horizon: int, level: float) -> Forecast:
        """Before the first fit: the last value, with a Gaussian interval when possible."""
        stream = self._stream
        n_channels = len(stream.channels) if stream.channels else 1
        last = stream.last_finite if stream.last_finite is not None else np.zeros(n_channels)
        mean = np.repeat(last[None, :], horizon, axis=0)
        if stream.n >= 2:
            half = NormalDist().inv_cdf(0.5 + level / 2) * self._obs.scaler.current()[1]
            lower, upper = mean - half, mean + half
        else:
            lower = upper = np.full_like(mean, np.nan)
        return Forecast(
            mean=self._shape(mean),
            lower=self._shape(lower),
            upper=self._shape(upper),
            level=level,
            channels=self.channels,
            fallback=True,
        )

    def _shape(self, values: np.ndarray) -> np.ndarray:
        return values[:, 0].copy() if self._stream.channels is None else values.copy()
