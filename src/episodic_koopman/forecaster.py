"""`EpisodicKoopman`: an online Koopman forecaster with an episodic memory."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from river.time_series.base import Forecaster

from . import validation as v
from .embedding import DelayEmbedding, History, Lifting, Standardizer, make_lifting
from .intervals import ConformalCalibrator
from .memory import EpisodeMemory
from .mixture import ExpertMixture
from .operator import KoopmanFit, WindowedDMD, propagate_many
from .rank import RankRule, validate_rank_rule
from .recall import (
    DRIFT_DETECTORS,
    MEMORY_EXPERTS,
    AdaptiveThreshold,
    DriftGate,
    KeyWeights,
    RecallContext,
    attention_weights,
    episode_key,
    episode_keys,
    exact_distances,
    key_dimension,
    make_correction,
    normalized_state,
    normalized_states,
)
from .spectrum import Signature, Spectrum, make_signature
from .threads import single_threaded

#: Largest horizon a single forecast may ask for.
MAX_HORIZON = 100_000
#: Largest number of observables (delays x channels, plus lifted features).
MAX_FEATURES = 2048

STRATEGIES = ("mixture", "analog", "residual", "transfer")
ALIGNMENTS = ("zscore", "additive", "multiplicative", "last", "none")
MISSING_POLICIES = ("raise", "skip", "ffill")


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
    the mean is the last value).
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
        }


@dataclass
class _PendingRecords:
    """Episodes made but not yet filed (their continuations are not all observed), oldest first.

    Every field has one row per episode, so how they were batched leaves no trace.
    Episodes are filed into memory by prefix as their continuations complete.
    """

    origins: np.ndarray  # (B,) observation indices
    window_starts: np.ndarray  # (B,)
    keys: np.ndarray  # (B, key dim)
    states: np.ndarray  # (B, state length)
    histories: np.ndarray  # (B, state_delays, c)
    forecasts: np.ndarray  # (B, horizon, c): the operator's forecast at each origin
    sig_eigenvalues: np.ndarray  # (B, max_rank)
    sig_modes: np.ndarray  # (B, max_rank, mode length)
    sig_ranks: np.ndarray  # (B,)
    ref_means: np.ndarray  # (B, c)
    ref_scales: np.ndarray  # (B, c)

    FIELDS = (
        "origins",
        "window_starts",
        "keys",
        "states",
        "histories",
        "forecasts",
        "sig_eigenvalues",
        "sig_modes",
        "sig_ranks",
        "ref_means",
        "ref_scales",
    )

    def __len__(self) -> int:
        return int(self.origins.shape[0])

    def rows(self, start: int, stop: int | None = None) -> _PendingRecords:
        return _PendingRecords(*(getattr(self, f)[start:stop] for f in self.FIELDS))

    def extend(self, other: _PendingRecords) -> _PendingRecords:
        if len(self) == 0:
            return other
        return _PendingRecords(
            *(np.concatenate([getattr(self, f), getattr(other, f)]) for f in self.FIELDS)
        )


@dataclass
class _PendingScore:
    """A scored forecast (every expert's, and the issued one) awaiting its outcome."""

    origin: int
    tracks: np.ndarray  # (n_experts, H, c)
    available: np.ndarray  # (n_experts,) which experts could forecast then
    issued: np.ndarray
    spread: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    ref_scale: np.ndarray
    realised: np.ndarray
    n_realised: int = 0


@dataclass(frozen=True)
class _Recall:
    ids: np.ndarray
    distances: np.ndarray
    weights: np.ndarray
    records: dict[str, np.ndarray]
    admitted: bool


@dataclass(frozen=True)
class _Present:
    """Everything derived from the state at one tick (cached until the next update)."""

    n: int
    memory_version: int  # episodes ever filed when the recall was made: the cache's other key
    fit: KoopmanFit
    signature: Signature | None  # signature, state and key exist only with a memory
    state: np.ndarray | None
    key: np.ndarray | None
    recall: _Recall | None


class EpisodicKoopman(Forecaster):
    """Online Koopman (sliding-window DMD) forecaster with an episodic memory.

    The stream is standardised, delay-embedded (``delays`` lags per channel) and
    lifted. A rank-truncated DMD of the last ``window`` snapshots is kept up to
    date by O(m^2) rank-1 updates. Forecasts propagate its modes from the newest
    snapshot, with unstable eigenvalues pulled onto the unit circle.

    **Memory.** Every ``memory_stride`` steps the present becomes an *episode*: the
    spectral signature of the latest fit, the state (the normalised delay window),
    the operator's forecast, and, once ``episode_horizon`` steps have passed, what
    really followed. Only then does it enter the FAISS-indexed memory. A forecast
    looks up episodes whose spectrum *and* state resemble the present: FAISS
    proposes ``candidates``, and an exact distance (Wasserstein on eigenvalues,
    matched modes, state) keeps the ``top_k``. These are weighted by attention,
    ``softmax(-distance / tau)``, and turned into corrections:

    * ``analog``: replay what followed them, aligned to the present (z-score of the
      delay window); ``analog_last`` anchors the replay at the last value instead;
    * ``residual``: add the errors their operators' forecasts made;
    * ``transfer``: propagate the present with the operator fitted after them.

    **Mixture** (the default ``strategy``): the plain forecast and the ``experts``
    above are combined per step ahead, with weights learned online from each one's
    realised errors (`episodic_koopman.mixture`). Memory thus takes over where it
    predicts better (after regime changes, on recurring patterns) and steps back
    where the window's operator is right (steady state). A single ``strategy``
    applies that correction alone whenever recall is admitted.

    Every ``stride`` steps the forecast is *scored*: the mixture and the conformal
    intervals learn from its errors. Intervals are per step ahead, widened or
    narrowed by the spread among the recalled episodes. Before the first fit (after
    ``3 * delays`` observations), `forecast` returns the last value (0.0 before any
    data).

    Parameters
    ----------
    delays
        Lags per channel in the delay embedding.
    window
        Snapshot pairs in the sliding DMD window.
    rank
        Truncation rule: an int, an energy fraction in (0, 1], or ``"gd"``
        (Gavish-Donoho optimal hard threshold). See `episodic_koopman.rank`.
    max_rank
        Cap on the rank (and the length of spectral signatures).
    memory
        ``False`` gives the same predictor without recall (a clean baseline).
    strategy
        ``"mixture"``, or a single correction: ``"analog"``, ``"residual"``,
        ``"transfer"``.
    experts
        Memory experts of the mixture, comma-separated, from ``analog``,
        ``analog_last``, ``analog_additive``, ``analog_multiplicative``,
        ``residual``, ``transfer``.
    episode_horizon
        Steps each episode covers. Corrections, mixture weights and calibrated
        intervals cover this many steps; beyond it they are extended.
    memory_stride
        Steps between stored episodes.
    stride
        Steps between scored forecasts (and refreshed spectra).
    top_k, candidates
        Episodes kept after the exact rerank, and FAISS candidates before it.
    tau
        Attention temperature, in units of the typical best match distance.
    recall_quantile
        Recall only when the best match is within this quantile of recent best
        distances (1.0: always).
    alignment, blend
        For ``strategy="analog"``: how past continuations are mapped to the present,
        and how much of the analog replaces the plain forecast (1.0: all).
    mixture_decay, mixture_eta, mixture_fast_decay
        Forgetting factor of the experts' loss averages (per scored forecast), the
        sharpness of the mixture's weights, and the forgetting factor of the fast
        one-step loss that flags a regime change for an expert (0 disables it).
    eigenvalue_weight, mode_weight, state_weight
        Weights of the terms of the match distance (see `episodic_koopman.recall`).
        Episodes always keep their mode shapes; a zero ``mode_weight`` leaves them out
        of the FAISS key and the rerank.
    capacity
        Most episodes kept; the oldest are evicted first.
    hnsw_threshold
        Past this many episodes the index switches from exact (flat) to HNSW.
    drift_gate, gate_span
        ``None``, or a river drift detector (``"page_hinkley"``, ``"kswin"``) on the
        scored one-step errors: recall then applies only within ``gate_span`` steps
        after a detected drift.
    level
        Level of the intervals issued at scored origins (for the coverage report).
    calibration_window
        Scored forecasts kept per step ahead for conformal calibration.
    stabilize
        ``"clip"`` pulls eigenvalues with modulus above 1 onto the unit circle;
        ``"none"`` leaves them.
    refit_every
        Steps between exact refits (which also refresh the standardisation);
        ``None`` means ``window``.
    lifting, n_components, bandwidth
        ``"identity"`` (plain Hankel DMD) or ``"rff"`` (delay vector plus random
        Fourier features approximating an RBF kernel, i.e. kernel EDMD).
    mode_delays
        Newest delays of each mode kept in its signature.
    state_delays
        Newest observations (per channel) forming the state that episodes are
        matched and aligned on; ``None`` means ``delays``. Shorter states recognise
        a recurring regime sooner after a change; longer ones tell regimes apart better.
    missing
        ``"raise"`` on NaN/inf, ``"skip"`` such observations (counted in
        `n_missing`), or ``"ffill"`` (replace by the last finite value, per channel).
    seed
        Seeds the random features and stochastic drift detectors.
    dt
        Time units per step, for reported frequencies and growth rates.

    Examples
    --------
    >>> import numpy as np
    >>> from episodic_koopman import EpisodicKoopman
    >>> t = np.arange(400)
    >>> model = EpisodicKoopman(delays=16, window=64, memory=False)
    >>> model.learn_many(np.sin(2 * np.pi * t / 25))
    >>> [round(v, 3) for v in model.forecast(horizon=3)]
    [0.0, 0.249, 0.482]
    >>> f = model.predict(horizon=3)
    >>> round(f.spectrum.summary()[0]["period"], 3)
    25.0
    """

    def __init__(
        self,
        delays: int = 32,
        window: int = 256,
        rank: RankRule = "gd",
        max_rank: int = 16,
        memory: bool = True,
        strategy: str = "mixture",
        experts: str = "analog,analog_last",
        episode_horizon: int = 24,
        memory_stride: int = 1,
        stride: int = 8,
        top_k: int = 5,
        candidates: int = 16,
        tau: float = 0.5,
        recall_quantile: float = 1.0,
        alignment: str = "zscore",
        blend: float = 1.0,
        mixture_decay: float = 0.05,
        mixture_eta: float = 4.0,
        mixture_fast_decay: float = 0.0,
        eigenvalue_weight: float = 0.1,
        mode_weight: float = 0.0,
        state_weight: float = 1.0,
        capacity: int = 10_000,
        hnsw_threshold: int = 50_000,
        drift_gate: str | None = None,
        gate_span: int = 96,
        level: float = 0.9,
        calibration_window: int = 200,
        stabilize: str = "clip",
        refit_every: int | None = None,
        lifting: str = "identity",
        n_components: int = 64,
        bandwidth: float = 2.0,
        mode_delays: int = 4,
        state_delays: int | None = None,
        missing: str = "raise",
        seed: int = 0,
        dt: float = 1.0,
    ) -> None:
        self.delays = delays
        self.window = window
        self.rank = rank
        self.max_rank = max_rank
        self.memory = memory
        self.strategy = strategy
        self.experts = experts
        self.episode_horizon = episode_horizon
        self.memory_stride = memory_stride
        self.stride = stride
        self.top_k = top_k
        self.candidates = candidates
        self.tau = tau
        self.recall_quantile = recall_quantile
        self.alignment = alignment
        self.blend = blend
        self.mixture_decay = mixture_decay
        self.mixture_eta = mixture_eta
        self.mixture_fast_decay = mixture_fast_decay
        self.eigenvalue_weight = eigenvalue_weight
        self.mode_weight = mode_weight
        self.state_weight = state_weight
        self.capacity = capacity
        self.hnsw_threshold = hnsw_threshold
        self.drift_gate = drift_gate
        self.gate_span = gate_span
        self.level = level
        self.calibration_window = calibration_window
        self.stabilize = stabilize
        self.refit_every = refit_every
        self.lifting = lifting
        self.n_components = n_components
        self.bandwidth = bandwidth
        self.mode_delays = mode_delays
        self.state_delays = state_delays
        self.missing = missing
        self.seed = seed
        self.dt = dt
        self._check_params()
        self._reset()

    # ------------------------------------------------------------------ parameters
    def _check_params(self) -> None:
        v.check_positive_int("delays", self.delays, 1, MAX_FEATURES)
        v.check_positive_int("window", self.window, 2, 1_000_000)
        validate_rank_rule(self.rank)
        v.check_positive_int("max_rank", self.max_rank, 1, MAX_FEATURES)
        if not isinstance(self.memory, bool):
            raise TypeError(f"memory must be True or False, got {self.memory!r}")
        v.check_choice("strategy", self.strategy, STRATEGIES)
        if not isinstance(self.experts, str):
            raise TypeError(f"experts must be a comma-separated string, got {self.experts!r}")
        for name in self._memory_expert_names():
            v.check_choice("experts", name, MEMORY_EXPERTS)
        v.check_positive_int("episode_horizon", self.episode_horizon, 1, 100_000)
        v.check_positive_int("memory_stride", self.memory_stride, 1, 1_000_000)
        v.check_positive_int("stride", self.stride, 1, 1_000_000)
        v.check_positive_int("top_k", self.top_k, 1, 10_000)
        v.check_positive_int("candidates", self.candidates, 1, 100_000)
        if self.candidates < self.top_k:
            raise ValueError(f"candidates ({self.candidates}) must be >= top_k ({self.top_k})")
        for name in ("tau", "bandwidth", "dt", "mixture_eta"):
            value = getattr(self, name)
            if not v.is_real_number(value) or not (0 < float(value) < math.inf):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        for name in ("eigenvalue_weight", "mode_weight", "state_weight"):
            value = getattr(self, name)
            if not v.is_real_number(value) or not (0 <= float(value) < math.inf):
                raise ValueError(f"{name} must be a non-negative finite number, got {value!r}")
        v.check_fraction("recall_quantile", self.recall_quantile, 0.0, 1.0 + 1e-12)
        v.check_fraction("mixture_decay", self.mixture_decay, 0.0, 1.0 + 1e-12)
        if not v.is_real_number(self.mixture_fast_decay) or not (
            0.0 <= float(self.mixture_fast_decay) <= 1.0
        ):
            raise ValueError(
                f"mixture_fast_decay must lie in [0, 1], got {self.mixture_fast_decay!r}"
            )
        v.check_choice("alignment", self.alignment, ALIGNMENTS)
        if not v.is_real_number(self.blend) or not (0.0 <= float(self.blend) <= 1.0):
            raise ValueError(f"blend must lie in [0, 1], got {self.blend!r}")
        v.check_positive_int("capacity", self.capacity, 1, 100_000_000)
        v.check_positive_int("hnsw_threshold", self.hnsw_threshold, 1, 10**12)
        if self.drift_gate is not None:
            v.check_choice("drift_gate", self.drift_gate, DRIFT_DETECTORS)
        v.check_positive_int("gate_span", self.gate_span, 1, 10**12)
        v.check_fraction("level", self.level)
        v.check_positive_int("calibration_window", self.calibration_window, 1, 1_000_000)
        v.check_choice("stabilize", self.stabilize, ("clip", "none"))
        if self.refit_every is not None:
            v.check_positive_int("refit_every", self.refit_every, 1, 10**12)
        v.check_choice("lifting", self.lifting, ("identity", "rff"))
        v.check_positive_int("n_components", self.n_components, 1, MAX_FEATURES)
        v.check_positive_int("mode_delays", self.mode_delays, 1, MAX_FEATURES)
        if self.state_delays is not None:
            v.check_positive_int("state_delays", self.state_delays, 2, self.window)
        v.check_choice("missing", self.missing, MISSING_POLICIES)
        v.check_positive_int("seed", self.seed, 0, 2**32 - 1)

    def _memory_expert_names(self) -> list[str]:
        if self.strategy != "mixture":
            return [self.strategy]
        names = [part.strip() for part in str(self.experts).split(",") if part.strip()]
        if not names:
            raise ValueError("experts must name at least one memory expert")
        if len(set(names)) != len(names):
            raise ValueError(f"experts lists a name twice: {self.experts!r}")
        return names

    @classmethod
    def _unit_test_params(cls):
        yield {"delays": 8, "window": 32}

    # ------------------------------------------------------------------ state
    def _reset(self) -> None:
        self._channels: list[str] | None = None
        self._scalar: bool | None = None
        self._n = 0
        self._n_missing = 0
        self._ready_at: int | None = None
        self._last_finite: np.ndarray | None = None
        self._ref_mean: np.ndarray | None = None
        self._ref_scale: np.ndarray | None = None
        self._present_cache: _Present | None = None
        self._components_ready = False
        self._source = 0
        self._attached_memory: EpisodeMemory | None = getattr(self, "_attached_memory", None)
        # The fit and signature of the last scored step, reused by the records in between.
        self._last_fit: KoopmanFit | None = None
        self._last_signature: Signature | None = None
        self._record_cursor: int | None = None  # next origin whose episode is still to make

    def _setup(self, n_channels: int) -> None:
        """Build the components once the number of channels is known."""
        d, c = self.delays, n_channels
        n_inputs = d * c
        self._lift_map: Lifting = make_lifting(
            self.lifting, self.n_components, self.bandwidth, self.seed
        )
        n_features = self._lift_map.n_features(n_inputs)
        self._lift_map.setup(n_inputs)
        self._embedding = DelayEmbedding(d, c)
        self._scaler = Standardizer(c)
        # Batched episodes read back up to `stride` steps beyond a state or a continuation.
        self._history = History(
            max(
                self.window + d,
                self.episode_horizon + self.stride + 1,
                (self.state_delays or d) + self.stride + 1,
            ),
            c,
        )
        self._operator = WindowedDMD(n_features, self.window, self.rank, self.max_rank)
        self._calibrator = ConformalCalibrator(self.episode_horizon, c, self.calibration_window)
        self._threshold = AdaptiveThreshold(self.recall_quantile)
        self._gate = (
            DriftGate(self.drift_gate, self.gate_span, self.seed) if self.drift_gate else None
        )
        self._key_weights = KeyWeights(self.eigenvalue_weight, self.mode_weight, self.state_weight)
        self._mode_length = self._mode_length_for(c)
        self._state_delays = self.state_delays or d
        memory_experts = self._memory_expert_names() if self.memory else []
        self._corrections = {
            name: make_correction(name, self.alignment, self.blend)  # type: ignore[arg-type]
            for name in memory_experts
        }
        self._expert_names = ["plain", *memory_experts]
        self._mixture = (
            ExpertMixture(
                self._expert_names,
                self.episode_horizon,
                self.mixture_decay,
                self.mixture_eta,
                self.mixture_fast_decay,
            )
            if self.strategy == "mixture"
            else None
        )
        self._memory: EpisodeMemory | None = None
        if self.memory:
            if self._attached_memory is not None:
                self._memory = self._attached_memory
            else:
                self._memory = EpisodeMemory(
                    self._key_dimension(c),
                    capacity=self.capacity,
                    hnsw_threshold=self.hnsw_threshold,
                )
        self._pending_records: _PendingRecords | None = None
        self._pending_scores: list[_PendingScore] = []
        self._components_ready = True

    def _mode_length_for(self, n_channels: int) -> int:
        """Coordinates per mode in a signature: the newest ``mode_delays`` of each channel."""
        return min(self.mode_delays, self.delays) * n_channels

    def _key_dimension(self, n_channels: int) -> int:
        # With a zero mode weight, modes stay in the episodes but out of the FAISS key.
        key_modes = self._mode_length_for(n_channels) if self.mode_weight > 0 else 0
        state_length = (self.state_delays or self.delays) * n_channels
        return key_dimension(self.max_rank, key_modes, state_length)

    @property
    def _min_pairs(self) -> int:
        return min(self.window, 2 * self.delays)

    @property
    def _refit_period(self) -> int:
        return self.refit_every if self.refit_every is not None else self.window

    # ------------------------------------------------------------------ public API
    @property
    def n_observations(self) -> int:
        """Observations learned (skipped missing values excluded)."""
        return self._n

    @property
    def n_missing(self) -> int:
        """Observations skipped or forward-filled under the ``missing`` policy."""
        return self._n_missing

    @property
    def channels(self) -> list[str] | None:
        """Channel names (``None`` for a single series)."""
        return list(self._channels) if self._channels is not None else None

    @property
    def is_fitted(self) -> bool:
        """Whether an operator has been fitted (before that, forecasts are the last value)."""
        return self._ready_at is not None

    @property
    def memory_size(self) -> int:
        """Episodes stored in memory (recallable)."""
        if not self._components_ready or self._memory is None:
            return 0
        self._catch_up()
        return len(self._memory)

    @property
    def coverage(self) -> float | None:
        """Empirical coverage of the intervals issued at scored origins (at ``level``)."""
        if not self._components_ready:
            return None
        self._catch_up()
        return self._calibrator.coverage()

    def _catch_up(self) -> None:
        """Make and file the episodes of every observation so far (see `_flush`)."""
        if self._components_ready and self._ready_at is not None:
            with single_threaded():
                self._flush(upto=self._n - 1)

    def expert_weights(self) -> dict[str, list[float]] | None:
        """The mixture's current weight of each expert per step ahead (``None`` if no mixture).

        Weights assume every expert can forecast; an expert without a recall at
        some origin gets no weight there and the others share it.
        """
        if not self._components_ready or self._mixture is None:
            return None
        self._catch_up()
        available = np.ones(len(self._expert_names), dtype=bool)
        w = self._mixture.weights(available, self.episode_horizon)
        return {name: w[i].tolist() for i, name in enumerate(self._expert_names)}

    @property
    def min_observations(self) -> int:
        """Observations needed before the first fit (until then, forecasts are the last value)."""
        return self.delays + self._min_pairs

    def new_memory(self, n_channels: int = 1) -> EpisodeMemory:
        """An empty memory that models with these parameters (and channel count) can share.

        >>> from episodic_koopman import EpisodicKoopman
        >>> a, b = EpisodicKoopman(delays=8, window=32), EpisodicKoopman(delays=8, window=32)
        >>> shared = a.new_memory()
        >>> a.attach_memory(shared, source=0); b.attach_memory(shared, source=1)
        """
        v.check_positive_int("n_channels", n_channels, 1, MAX_FEATURES)
        return EpisodeMemory(
            self._key_dimension(n_channels),
            capacity=self.capacity,
            hnsw_threshold=self.hnsw_threshold,
        )

    def attach_memory(self, memory: EpisodeMemory, source: int = 0) -> None:
        """Store episodes in, and recall them from, ``memory``: possibly shared by many models.

        Call before the first observation. Episodes are scale-free (normalised
        states, level-aligned replays, errors in units of each series' scale), so
        models of series on different scales can share one memory; each episode
        records ``source`` to say which model stored it. A saved model keeps a copy
        of the memory it used.
        """
        if self._components_ready:
            raise ValueError("attach_memory must be called before the model learns anything")
        if not self.memory:
            raise ValueError("this model was built with memory=False")
        v.check_positive_int("source", source, 0, 2**62)
        self._attached_memory = memory
        self._source = int(source)

    def learn_one(self, y: float | dict[str, float], x: dict | None = None) -> None:
        """Learn one observation: a number, or a dict of channel to number.

        ``x`` (exogenous features, as river's evaluation passes) is accepted and
        ignored.
        """
        if self._components_ready and self._scalar and (type(y) is float or type(y) is int):
            # Fast path for the common case: the same checks in plain Python (a third of
            # the cost of a step went to NumPy overhead on one-element arrays).
            value = float(y)
            if math.isfinite(value) and abs(value) <= v.MAX_ABS_VALUE:
                self._step(np.array([value]))
                return
        values, channels, scalar = v.coerce_observation(y, self._channels, self._scalar)
        kept, n_affected = self._apply_missing_policy(values[None, :])
        self._check_layout(values.shape[0])
        self._n_missing += n_affected
        if kept.shape[0] == 0:
            return
        self._adopt_layout(channels, scalar, values.shape[0])
        self._step(kept[0])

    def learn_many(self, values: Any) -> None:
        """Learn a batch in order; the same result as a loop of `learn_one`.

        ``values``: a sequence or 1-D array (single series), a sequence of dicts,
        a dict of channel to 1-D array, or a 2-D array whose columns are the
        model's channels. The whole batch is validated before anything is learned.
        """
        array, channels, scalar = v.coerce_many(values, self._channels, self._scalar)
        if array.shape[0] == 0:
            return
        kept, n_affected = self._apply_missing_policy(array)
        self._check_layout(array.shape[1])
        self._n_missing += n_affected
        if kept.shape[0] == 0:
            return
        self._adopt_layout(channels, scalar, array.shape[1])
        with single_threaded():
            for row in kept:
                self._step(row)

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
            self._flush(upto=self._n - 1)
            present = self._present()
            mean, spread, _, _ = self._combine(present, horizon)
            half = self._calibrator.half_width(level, spread, horizon, self._scaler.current()[1])
            spectrum = self._spectrum(present.fit)
        recall = present.recall
        return Forecast(
            mean=self._shape(mean),
            lower=self._shape(mean - half),
            upper=self._shape(mean + half),
            level=level,
            channels=self.channels,
            recalled=self._recalled_list(recall),
            recall_applied=bool(recall is not None and recall.admitted),
            spectrum=spectrum,
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
            snaps = self._operator.snapshots()
            fit = batch_dmd(snaps[:-1].T, snaps[1:].T, self.rank, self.max_rank)
            path = fit.propagate(snaps[-1], horizon, self._embedding.readout, self.stabilize)  # type: ignore[arg-type]
        return path * self._ref_scale + self._ref_mean

    def spectrum(self) -> Spectrum | None:
        """The current fit's spectrum (``None`` before the first fit)."""
        if not self.is_fitted:
            return None
        with single_threaded():
            fit = self._operator.fit()
            assert fit is not None
            return self._spectrum(fit)

    def episodes(self, offset: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """Browse the memory, oldest first: JSON-safe summaries of stored episodes."""
        offset = v.check_positive_int("offset", offset, 0)
        limit = v.check_positive_int("limit", limit, 1, 10_000)
        if not self._components_ready or self._memory is None:
            return []
        self._catch_up()
        ids = self._memory.live_ids()[offset : offset + limit]
        records = self._memory.get(ids)
        out = []
        for i, episode_id in enumerate(ids):
            rank = int(records["rank"][i])
            eigs = records["eigenvalues"][i][:rank]
            errors = records["continuation"][i] - records["forecast"][i]
            with np.errstate(divide="ignore"):
                growth = np.log(np.abs(eigs)) / self.dt
            out.append(
                {
                    "id": int(episode_id),
                    "source": int(records["source"][i]),
                    "origin": int(records["origin"][i]),
                    "window_start": int(records["window_start"][i]),
                    "rank": rank,
                    "frequencies": (np.angle(eigs) / (2 * np.pi * self.dt)).tolist(),
                    "growth_rates": [float(g) if np.isfinite(g) else None for g in growth],
                    "forecast": records["forecast"][i].tolist(),
                    "realised": records["continuation"][i].tolist(),
                    "mae": float(np.mean(np.abs(errors))),
                }
            )
        return out

    def save(self, path: str | Path) -> None:
        """Save to a single versioned file (JSON + npz + FAISS index; no pickle)."""
        from .persistence import save_model

        save_model(self, path)

    @classmethod
    def load(cls, path: str | Path) -> EpisodicKoopman:
        """Load a model saved by `save`; it forecasts bit-identically."""
        from .persistence import load_model

        return load_model(path)

    # ------------------------------------------------------------------ ingest
    def _apply_missing_policy(self, rows: np.ndarray) -> tuple[np.ndarray, int]:
        """Check finiteness of the whole batch and apply ``missing`` (no mutation).

        Returns the rows to learn and how many observations were skipped or filled.
        """
        v.check_magnitude(rows)
        bad = v.first_non_finite(rows)
        if bad is None:
            return rows, 0
        if self.missing == "raise":
            row, col = bad
            where = f"observation {row}" if rows.shape[0] > 1 else "observation"
            channel = f", channel {self._channels[col]!r}" if self._channels else ""
            raise ValueError(
                f"{where}{channel} is {rows[row, col]!r}; values must be finite "
                "(or construct the model with missing='skip' or 'ffill')"
            )
        finite_rows = np.all(np.isfinite(rows), axis=1)
        if self.missing == "skip":
            return rows[finite_rows], int(np.count_nonzero(~finite_rows))
        filled = rows.copy()
        last = None if self._last_finite is None else self._last_finite.copy()
        for i in range(filled.shape[0]):
            if last is not None:
                filled[i] = np.where(np.isfinite(filled[i]), filled[i], last)
            if not np.all(np.isfinite(filled[i])):
                raise ValueError(
                    f"observation {i} is missing before any finite value to fill it with"
                )
            last = filled[i]
        return filled, int(np.count_nonzero(~finite_rows))

    def _check_layout(self, n_channels: int) -> None:
        """Reject a channel count the model cannot hold, before anything changes."""
        if self._components_ready:
            return
        n_inputs = self.delays * n_channels
        n_features = n_inputs + (self.n_components if self.lifting == "rff" else 0)
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

    def _adopt_layout(self, channels: list[str] | None, scalar: bool, n_channels: int) -> None:
        if self._scalar is None:
            self._scalar, self._channels = scalar, channels
        if not self._components_ready:
            self._setup(n_channels)

    def _step(self, values: np.ndarray) -> None:
        """Learn one validated observation."""
        self._last_finite = values.copy()
        self._scaler.update(values)
        self._history.append(values)
        self._n += 1
        if self._n < self.delays:
            return
        if self._ref_mean is None:
            self._ref_mean, self._ref_scale = self._scaler.current()
        self._operator.push(self._lift(self._history.last(self.delays)))
        refit = self._refit_due()
        if self._ready_at is None:
            return
        since = self._n - self._ready_at
        if since == 0:
            self._record_cursor = self._n - 1
        scored = since % self.stride == 0
        if not (refit or scored):
            return  # the episodes of the steps in between are made in one batch, later
        # Only these steps run LAPACK (and refits BLAS level 3): pin threads for them.
        with single_threaded():
            # Episodes up to the previous observation belong to the fit and standardisation
            # in force until now: bring them up to date before either changes.
            self._flush(upto=self._n - 2)
            if refit:
                self._reanchor()
            if scored:
                present = self._present(observe=True)
                self._last_fit, self._last_signature = present.fit, present.signature
                self._open_score(present)

    def _lift(
        self,
        window: np.ndarray,
        mean: np.ndarray | None = None,
        scale: np.ndarray | None = None,
    ) -> np.ndarray:
        mean = self._ref_mean if mean is None else mean
        scale = self._ref_scale if scale is None else scale
        return self._lift_map.transform(self._embedding.snapshot(window, mean, scale))

    def _refit_due(self) -> bool:
        if self._ready_at is None:
            if self._operator.n_pairs >= self._min_pairs:
                self._ready_at = self._n
                return True
            return False
        since = self._n - self._ready_at
        return since > 0 and since % self._refit_period == 0

    def _reanchor(self) -> None:
        """Refresh the standardisation and refit the window exactly."""
        self._ref_mean, self._ref_scale = self._scaler.current()
        n_snap = self._operator.n_snapshots
        raw = self._history.last(n_snap + self.delays - 1)
        snaps = self._embedding.snapshots(raw, self._ref_mean, self._ref_scale)
        self._operator.replace_snapshots(self._lift_map.transform(snaps))

    # ------------------------------------------------------------------ episodes
    def _flush(self, upto: int) -> None:
        """Bring episodes up to date, in batches.

        Make the episodes of origins up to ``upto``, score pending forecasts against
        every observation since they were last scored, and file episodes whose
        continuation is complete into memory. This runs at every scored step and
        refit, and before any read. The result does not depend on when it runs:
        each piece is a function of the state at its origin, and every update lands
        in the order the observations came.
        """
        if self._ready_at is None:
            return
        if self._memory is not None:
            self._make_records(upto)
        self._advance_scores()
        if self._memory is not None:
            self._file_records()

    def _make_records(self, upto: int) -> None:
        """Episodes for the due origins in ``[cursor, upto]``, with the latest scored fit."""
        start = self._record_cursor
        if start is None or upto < start:
            return
        assert self._ready_at is not None
        first = start + (self._ready_at - 1 - start) % self.memory_stride
        origins = np.arange(first, upto + 1, self.memory_stride, dtype=np.int64)
        self._record_cursor = upto + 1
        if origins.size == 0:
            return
        fit, signature = self._last_fit, self._last_signature
        assert fit is not None and signature is not None
        lag = (self._n - 1) - origins
        ds = self._state_delays
        rows = self._history.last(int(lag[0]) + ds)
        windows = sliding_window_view(rows, (ds, rows.shape[1]))[:, 0]
        histories = windows[origins - origins[0]].copy()
        states = normalized_states(histories)
        snapshots = self._operator.snapshots()
        forecasts = propagate_many(
            fit,
            snapshots[snapshots.shape[0] - 1 - lag],
            self.episode_horizon,
            self._embedding.readout,
            self.stabilize,  # type: ignore[arg-type]
        )
        n_snapshots = np.minimum(self._operator.n_pushed - lag, self.window + 1)
        count = origins.shape[0]
        made = _PendingRecords(
            origins=origins,
            window_starts=origins + 2 - n_snapshots - self.delays,
            keys=episode_keys(signature, states, self._key_weights),
            states=states,
            histories=histories,
            forecasts=forecasts * self._ref_scale + self._ref_mean,
            sig_eigenvalues=np.repeat(signature.eigenvalues[None], count, axis=0),
            sig_modes=np.repeat(signature.modes[None], count, axis=0),
            sig_ranks=np.full(count, signature.rank, dtype=np.int64),
            ref_means=np.repeat(self._ref_mean[None], count, axis=0),
            ref_scales=np.repeat(self._ref_scale[None], count, axis=0),
        )
        self._pending_records = (
            made if self._pending_records is None else self._pending_records.extend(made)
        )

    def _file_records(self) -> None:
        """Episodes whose continuation is complete enter memory and become recallable."""
        assert self._memory is not None
        pending = self._pending_records
        if pending is None or len(pending) == 0:
            return
        newest, horizon = self._n - 1, self.episode_horizon
        due = int(np.searchsorted(pending.origins, newest - horizon, side="right"))
        if due == 0:
            return
        done = pending.rows(0, due)
        origins = done.origins
        rows = self._history.last(int(newest - origins[0]))  # observations after origins[0]
        windows = sliding_window_view(rows, (horizon, rows.shape[1]))[:, 0]
        records: dict[str, np.ndarray] = {
            "source": np.full(due, self._source, dtype=np.int64),
            "origin": origins,
            "window_start": done.window_starts,
            "rank": done.sig_ranks,
            "eigenvalues": done.sig_eigenvalues,
            "modes": done.sig_modes,
            "state": done.states,
            "history": done.histories,
            "continuation": windows[origins - origins[0]],
            "forecast": done.forecasts,
            "ref_mean": done.ref_means,
            "ref_scale": done.ref_scales,
        }
        if "transfer" in self._corrections:
            successor = self._successor_record()
            records |= {k: np.broadcast_to(v, (due, *v.shape)) for k, v in successor.items()}
        self._memory.add_many(done.keys, records)
        self._pending_records = pending.rows(due)

    def _advance_scores(self) -> None:
        """Score pending forecasts against the observations that arrived since last time."""
        newest, horizon = self._n - 1, self.episode_horizon
        learn_mixture = self._mixture is not None and len(self._expert_names) > 1
        for score in self._pending_scores:  # oldest first: each loss lands in time order
            k0, k1 = score.n_realised, min(horizon, newest - score.origin)
            if k1 <= k0:
                continue
            rows = self._history.last(newest - score.origin - k0)[: k1 - k0]
            score.realised[k0:k1] = rows
            if learn_mixture:
                errors = np.abs(rows[None] - score.tracks[:, k0:k1]) / score.ref_scale
                available = np.broadcast_to(score.available, (k1 - k0, score.available.size))
                assert self._mixture is not None
                self._mixture.update_many(np.arange(k0, k1), errors.mean(axis=2).T, available)
            if k0 == 0 and self._gate is not None:
                error = float((np.abs(rows[0] - score.issued[0]) / score.ref_scale).mean())
                self._gate.update(error, at=score.origin + 1)
            score.n_realised = k1
        while self._pending_scores and self._pending_scores[0].n_realised >= horizon:
            score = self._pending_scores.pop(0)
            self._calibrator.update(
                score.realised - score.issued,
                score.spread,
                score.lower,
                score.upper,
                score.realised,
            )

    def _successor_record(self) -> dict[str, np.ndarray]:
        """The operator fitted just after an episode's horizon (the latest scored fit)."""
        fit = self._last_fit
        assert fit is not None
        r = min(fit.rank, self.max_rank)
        eigenvalues = np.zeros(self.max_rank, dtype=np.complex128)
        modes = np.zeros((self._operator.n_features, self.max_rank), dtype=np.complex128)
        eigenvalues[:r] = fit.eigenvalues[:r]
        modes[:, :r] = fit.modes[:, :r]
        return {
            "succ_eigenvalues": eigenvalues,
            "succ_modes": modes,
            "succ_rank": np.array(r, dtype=np.int64),
            "succ_ref_mean": self._ref_mean.copy(),
            "succ_ref_scale": self._ref_scale.copy(),
        }

    def _open_score(self, present: _Present) -> None:
        """Issue a forecast at this origin, to be scored when its horizon has passed."""
        horizon = self.episode_horizon
        issued, spread, tracks, available = self._combine(present, horizon)
        half = self._calibrator.half_width(self.level, spread, horizon, self._scaler.current()[1])
        self._pending_scores.append(
            _PendingScore(
                origin=self._n - 1,
                tracks=tracks,
                available=available,
                issued=issued,
                spread=spread,
                lower=issued - half,
                upper=issued + half,
                ref_scale=self._ref_scale.copy(),
                realised=np.zeros_like(issued),
            )
        )

    # ------------------------------------------------------------------ forecasting
    def _present(self, observe: bool = False) -> _Present:
        """Fit, signature, state and recall at the current tick (cached per tick).

        ``observe`` (scored ticks only) feeds the best match distance to the
        adaptive threshold before deciding, so a `predict` at the same tick agrees
        with the forecast that was scored.
        """
        cached = self._present_cache
        version = self._memory.next_id if self._memory is not None else 0
        if (
            cached is not None
            and not observe
            and (cached.n, cached.memory_version)
            == (
                self._n,
                version,
            )
        ):
            return cached
        fit = self._operator.fit()
        assert fit is not None
        signature = state = key = recall = None
        if self._memory is not None:
            n_inputs = self._embedding.dimension
            signature = make_signature(
                fit.eigenvalues,
                fit.amplitudes(self._operator.newest()),
                fit.modes[:n_inputs],
                mode_rows=slice(n_inputs - self._mode_length, n_inputs),
                reference_rows=slice(self._mode_length - self._embedding.n_channels, None),
                r_max=self.max_rank,
            )
            state = normalized_state(self._history.last(self._state_delays))
            key = episode_key(signature, state, self._key_weights)
            recall = self._recall(signature, state, key, observe)
        present = _Present(self._n, version, fit, signature, state, key, recall)
        self._present_cache = present
        return present

    def _recall(
        self, signature: Signature, state: np.ndarray, key: np.ndarray, observe: bool
    ) -> _Recall | None:
        if self._memory is None or len(self._memory) == 0:
            return None
        ids, _ = self._memory.search(key, self.candidates)
        if ids.size == 0:
            return None
        records = self._memory.get(ids)
        distances = exact_distances(
            signature,
            state,
            records["eigenvalues"],
            records["modes"],
            records["state"],
            self._key_weights,
            records["rank"],
        )
        order = np.lexsort((ids, distances))[: self.top_k]
        best = float(distances[order[0]])
        if observe:
            self._threshold.observe(best)
        gate_open = self._gate is None or self._gate.is_open(self._n - 1)
        admitted = gate_open and self._threshold.admits(best)
        weights = attention_weights(distances[order], self.tau, self._threshold.scale())
        return _Recall(
            ids=ids[order],
            distances=distances[order],
            weights=weights,
            records={name: column[order] for name, column in records.items()},
            admitted=admitted,
        )

    def _combine(
        self, present: _Present, steps: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every expert's forecast and their combination.

        Returns ``(mean, spread, tracks, available)``: ``tracks`` is
        ``(n_experts, steps, c)`` (zeros where an expert is unavailable).
        """
        plain = self._plain_forecast(present.fit, steps)
        tracks = np.zeros((len(self._expert_names), *plain.shape))
        spreads = np.zeros_like(tracks)
        available = np.zeros(len(self._expert_names), dtype=bool)
        tracks[0], available[0] = plain, True
        recall = present.recall
        if recall is not None and recall.admitted:
            context = RecallContext(
                plain=plain,
                history=self._history.last(max(self.delays, self._state_delays)),
                ref_mean=self._ref_mean,
                ref_scale=self._ref_scale,
                lift=self._lift,
                readout=self._embedding.readout,
                stabilize=self.stabilize,
            )
            for i, name in enumerate(self._expert_names[1:], start=1):
                tracks[i], spreads[i] = self._corrections[name].correct(
                    context, recall.records, recall.weights
                )
                available[i] = True
        if self._mixture is None:
            chosen = 1 if available[-1] and len(available) > 1 else 0
            return tracks[chosen], spreads[chosen], tracks, available
        weights = self._mixture.weights(available, steps)[:, :, None]
        mean = np.sum(weights * tracks, axis=0)
        spread = np.sum(weights * spreads, axis=0)
        return mean, spread, tracks, available

    def _plain_forecast(self, fit: KoopmanFit, steps: int) -> np.ndarray:
        z = fit.propagate(
            self._operator.newest(),
            steps,
            self._embedding.readout,
            self.stabilize,  # type: ignore[arg-type]
        )
        return z * self._ref_scale + self._ref_mean

    def _spectrum(self, fit: KoopmanFit) -> Spectrum:
        return Spectrum(
            eigenvalues=fit.eigenvalues,
            amplitudes=fit.amplitudes(self._operator.newest()),
            modes=fit.modes,
            dt=float(self.dt),
        )

    def _recalled_list(self, recall: _Recall | None) -> list[RecalledEpisode]:
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

    def _fallback(self, horizon: int, level: float) -> Forecast:
        """Before the first fit: the last value, with a Gaussian interval when possible."""
        n_channels = len(self._channels) if self._channels else 1
        last = self._last_finite if self._last_finite is not None else np.zeros(n_channels)
        mean = np.repeat(last[None, :], horizon, axis=0)
        if self._n >= 2:
            half = NormalDist().inv_cdf(0.5 + level / 2) * self._scaler.current()[1]
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
        return values[:, 0].copy() if self._channels is None else values.copy()

    # ------------------------------------------------------------------ persistence hooks
    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON metadata and arrays describing the whole learned state."""
        from .persistence import model_state

        return model_state(self)

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        from .persistence import restore_state

        restore_state(self, meta, arrays)
