"""Tuning knobs of `EpisodicKoopman`, in validated, JSON-safe, frozen config objects.

The constructor takes the parameters users set (``delays``, ``window``, ``rank``,
``episode_horizon``, ``level``, ``missing``, ``seed``, ``dt``) plus two configs:

* `MemoryConfig` (``memory=``; ``None`` turns memory off): episodes, recall, and
  the mixture of memory experts;
* `ModelConfig` (``config=``): the operator and how forecasts are scored.

Configs compare equal by value and copy cleanly, as river's ``clone`` needs.
`to_dict`/`from_dict` give their JSON form. The *flat form*
(`episodic_koopman.flat_params`) names every knob at the top level, as the
service's ``params`` and the CLI's ``--param k=v`` do: see `EpisodicKoopman.from_flat`.

>>> MemoryConfig(capacity=4000, top_k=3).to_dict()["capacity"]
4000
>>> MemoryConfig(top_k=8, candidates=4)
Traceback (most recent call last):
...
ValueError: candidates (4) must be >= top_k (8)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, TypeVar

from . import validation as v
from .corrections import MEMORY_EXPERTS
from .drift_gate import DRIFT_DETECTORS
from .experts import CLASSICAL_EXPERTS
from .mixture import MIXTURE_RULES
from .rank import RankRule, validate_rank_rule
from .trend_gate import TREND_GATE

#: Largest number of observables (delays x channels, plus lifted features).
MAX_FEATURES = 2048
#: The longest scoring stride (``ModelConfig.stride``, and where a growing one stops).
MAX_STRIDE = 1_000_000

STRATEGIES = ("mixture", "analog", "residual", "transfer")
ALIGNMENTS = ("zscore", "additive", "multiplicative", "last", "none")

_Config = TypeVar("_Config", bound="_JsonConfig")


def _positive_number(name: str, value: Any) -> None:
    if not v.is_real_number(value) or not (0 < float(value) < math.inf):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def _non_negative_number(name: str, value: Any) -> None:
    if not v.is_real_number(value) or not (0 <= float(value) < math.inf):
        raise ValueError(f"{name} must be a non-negative finite number, got {value!r}")


def _unit_interval(name: str, value: Any) -> None:
    if not v.is_real_number(value) or not (0.0 <= float(value) <= 1.0):
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")


class _JsonConfig:
    """`to_dict` / `from_dict` for the frozen config dataclasses."""

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain JSON-safe dict."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[_Config], values: dict[str, Any]) -> _Config:
        """The config from `to_dict`'s form; omitted fields keep their defaults."""
        if not isinstance(values, dict):
            raise TypeError(f"{cls.__name__}.from_dict takes a dict, got {values!r}")
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; valid: {names}")
        return cls(**values)


@dataclass(frozen=True)
class MemoryConfig(_JsonConfig):
    """The episodic memory: what is stored, how it is recalled, how experts are mixed.

    Every ``stride`` steps the present becomes an episode, filed once
    ``episode_horizon`` steps have followed. A forecast looks up the episodes whose
    spectrum and state resemble the present: FAISS proposes ``candidates``, the
    exact distance keeps the ``top_k``, weighted by ``softmax(-distance / tau)``.

    Parameters
    ----------
    capacity
        Most episodes kept; the oldest are evicted first.
    stride
        Steps between stored episodes (flat name ``memory_stride``).
    top_k, candidates
        Episodes kept after the exact rerank, and FAISS candidates before it.
    tau
        Attention temperature, in units of the typical best match distance.
    recall_quantile
        Recall only when the best match is within this quantile of recent best
        distances (1.0: always).
    strategy
        ``"mixture"`` (the plain forecast and the ``experts``, weighted per step
        ahead by their realised errors), or a single correction applied whenever
        recall is admitted: ``"analog"``, ``"residual"``, ``"transfer"``.
    experts
        Memory experts of the mixture, comma-separated, from ``analog``,
        ``analog_last``, ``analog_additive``, ``analog_multiplicative``,
        ``residual``, ``transfer``.
    alignment, blend
        For ``strategy="analog"``: how past continuations are mapped to the present,
        and how much of the analog replaces the plain forecast (1.0: all).
    mixture_rule
        How the mixture weighs its experts per step ahead: ``"hedge"`` (the
        default: exponential weights on relative losses, sharpened by
        ``mixture_eta``; the most accurate on every bench dataset, but with no
        formal regret bound), ``"boa"`` (Bernstein Online Aggregation) or
        ``"mlpoly"`` (ML-Poly), online rules with a regret guarantee against the
        best expert and no learning rate to tune. See `episodic_koopman.mixture`.
        A model without memory mixes its plain and classical experts with the
        defaults.
    mixture_decay, mixture_eta, mixture_fast_decay
        Forgetting factor of the experts' track records (loss averages, or ML-Poly's
        regrets; per scored forecast), the sharpness of the hedge rule's weights, and
        the forgetting factor of the fast one-step loss that flags a regime change
        for an expert under the hedge rule (0 disables it).
    eigenvalue_weight, mode_weight, state_weight
        Weights of the terms of the match distance (see `episodic_koopman.recall`).
        A zero ``mode_weight`` leaves mode shapes out of the FAISS key and the rerank.
    mode_delays
        Newest delays of each mode kept in its signature.
    state_delays
        Newest observations (per channel) forming the state that episodes are
        matched and aligned on; ``None`` means ``delays``.
    hnsw_threshold
        Past this many episodes the index switches from exact (flat) to HNSW.
    drift_gate, gate_span
        ``None``, or a river drift detector (``"page_hinkley"``, ``"kswin"``) on the
        scored one-step errors: recall then applies only within ``gate_span`` steps
        after a detected drift.
    """

    capacity: int = 10_000
    stride: int = 1
    top_k: int = 5
    candidates: int = 16
    tau: float = 0.5
    recall_quantile: float = 1.0
    strategy: str = "mixture"
    experts: str = "analog,analog_last"
    alignment: str = "zscore"
    blend: float = 1.0
    mixture_rule: str = "hedge"
    mixture_decay: float = 0.05
    mixture_eta: float = 4.0
    mixture_fast_decay: float = 0.0
    eigenvalue_weight: float = 0.1
    mode_weight: float = 0.0
    state_weight: float = 1.0
    mode_delays: int = 4
    state_delays: int | None = None
    hnsw_threshold: int = 50_000
    drift_gate: str | None = None
    gate_span: int = 96

    def __post_init__(self) -> None:
        v.check_positive_int("capacity", self.capacity, 1, 100_000_000)
        v.check_positive_int("memory_stride", self.stride, 1, 1_000_000)
        v.check_positive_int("top_k", self.top_k, 1, 10_000)
        v.check_positive_int("candidates", self.candidates, 1, 100_000)
        if self.candidates < self.top_k:
            raise ValueError(f"candidates ({self.candidates}) must be >= top_k ({self.top_k})")
        _positive_number("tau", self.tau)
        v.check_fraction("recall_quantile", self.recall_quantile, 0.0, 1.0 + 1e-12)
        v.check_choice("strategy", self.strategy, STRATEGIES)
        if not isinstance(self.experts, str):
            raise TypeError(f"experts must be a comma-separated string, got {self.experts!r}")
        for name in self.expert_names():
            v.check_choice("experts", name, MEMORY_EXPERTS)
        v.check_choice("alignment", self.alignment, ALIGNMENTS)
        _unit_interval("blend", self.blend)
        v.check_choice("mixture_rule", self.mixture_rule, MIXTURE_RULES)
        v.check_fraction("mixture_decay", self.mixture_decay, 0.0, 1.0 + 1e-12)
        _positive_number("mixture_eta", self.mixture_eta)
        _unit_interval("mixture_fast_decay", self.mixture_fast_decay)
        for name in ("eigenvalue_weight", "mode_weight", "state_weight"):
            _non_negative_number(name, getattr(self, name))
        v.check_positive_int("mode_delays", self.mode_delays, 1, MAX_FEATURES)
        if self.state_delays is not None:
            v.check_positive_int("state_delays", self.state_delays, 2, 1_000_000)
        v.check_positive_int("hnsw_threshold", self.hnsw_threshold, 1, 10**12)
        if self.drift_gate is not None:
            v.check_choice("drift_gate", self.drift_gate, DRIFT_DETECTORS)
        v.check_positive_int("gate_span", self.gate_span, 1, 10**12)

    def expert_names(self) -> list[str]:
        """The memory experts: the mixture's, or the single strategy."""
        if self.strategy != "mixture":
            return [self.strategy]
        names = [part.strip() for part in str(self.experts).split(",") if part.strip()]
        if not names:
            raise ValueError("experts must name at least one memory expert")
        if len(set(names)) != len(names):
            raise ValueError(f"experts lists a name twice: {self.experts!r}")
        return names


@dataclass(frozen=True)
class ModelConfig(_JsonConfig):
    """The operator, and how forecasts are scored.

    Parameters
    ----------
    max_rank
        Cap on the DMD rank (and the length of spectral signatures).
    stride
        Steps between scored forecasts (and refreshed spectra): the mixture and
        the conformal intervals learn from the errors of scored forecasts.
    stride_doublings, stride_doubling_at
        A stride that grows with the model's age: from observation count
        ``stride_doubling_at`` on, the stride doubles, and again at every doubling of
        the count, at most ``stride_doublings`` times (`stride_at`); ``0`` doublings keep
        ``stride`` throughout. A scored tick costs most of ``learn_one``, and an old
        model's mixture and intervals have many scores behind them. A function of the
        count alone, so forecasts stay a function of the observations. The default (8,
        16 from 6144, 32 from 12288) kept every bench series' MAE within 0.3% of a fixed
        stride of 8 (first and second halves); doubling from 2048 or 4096 moved
        drifting_van_der_pol's second half by +1.1% and +2.3%. A model file saved before
        these fields existed loads with ``0`` doublings, as it ran.
    refit_every
        Steps between exact refits (which also refresh the standardisation);
        ``None`` means ``window``.
    stabilize
        ``"clip"`` pulls eigenvalues with modulus above 1 onto the unit circle
        (`Forecast.n_clipped` counts them); ``"none"`` leaves them.
    lifting, n_components, bandwidth
        ``"identity"`` (plain Hankel DMD) or ``"rff"`` (delay vector plus
        ``n_components`` random Fourier features approximating an RBF kernel of
        ``bandwidth``, i.e. kernel EDMD).
    calibration_window
        Scored forecasts kept per step ahead for conformal calibration.
    early_grading
        Before the operator's first fit, also grade the classical experts' forecast
        at every step between scored ones (cheap then), for the intervals alone: while
        the scored forecasts are too few for a conformal quantile, one of these is
        taken instead of the Gaussian fallback (`episodic_koopman.intervals`). A short
        series (airline: 16 scored forecasts in 144 months) has intervals from its
        errors rather than a random-walk prior. A model file saved before this field
        existed loads with ``False``, as it ran.
    detrend
        Fit the operator on its window less each observable's least-squares line over
        the window, and add the line's continuation back to its forecasts (the
        `WindowedDMD` fit with ``detrend``; a rank-one correction of its Gram matrices).
        For series whose trend changes (airline: second-half MAE 18.99 -> 16.91); off by
        default because it costs elsewhere (first halves: stationary_control +2.5%, ilinet
        +1.8%, etth1/etth2 +1.1%): ``trend_gate`` turns it on where a trend rules. Not with
        the ``transfer`` memory expert. A model file saved before this field existed loads
        with it off.
    trend_gate
        With ``detrend`` off, detrend a fit (as ``detrend`` does) when the least-squares
        line of the operator's span (the last ``window + delays - 1`` observations) rises
        by more than this many standard deviations of the residuals around it, averaged
        over channels; decided at each fit. ``None``: never. The default 3 detrends airline
        (first-half MAE 16.91 -> 16.11) and no window of the stationary or seasonal bench
        series (see `episodic_koopman.trend_gate`). Off with the ``transfer`` memory expert
        (its stored fits carry no trend line). A model file saved before this field
        existed loads with ``None``, as it ran.
    classical_experts
        Cheap experts mixed with the operator's forecast (and memory's), comma-separated,
        from ``last`` (last value), ``seasonal`` (seasonal naives at the detected
        periods), ``seasonal_drift`` (the same, plus the change of level between the
        last two seasons), ``damped`` (damped-trend exponential smoothing), ``ar`` (local
        AR by recursive least squares), ``seasonal_ar`` (the same AR on the differences at
        each detected period: a SARIMA with drift; in the default in place of
        ``seasonal_drift``, 3% lower error over the bench series' first halves),
        ``theta`` (the Theta method: exponential smoothing plus half the slope of a
        least-squares line, its smoothing constant chosen online), ``theta_opt`` (the
        same choosing theta too: half, three quarters or all of the slope) and
        ``theta_seasonal`` (``theta`` on the seasonally adjusted series, at a period
        chosen near the detected ones; in the default: over the 11 bench series' first
        halves MAE -1.1% in geometric mean, water_flow -3.9%, airline -2.9%, ETTh -1 to
        -2.4%, none worse by more than 0.3%; `episodic_koopman.theta`),
        ``koopman12``/``16``/``24``/``48`` (the plain Koopman forecast at that many delays,
        refitted per stride; not in the default: within 1% either way on the real first
        halves); ``""`` for none. See `episodic_koopman.experts`.
    envelope
        Every expert's forecast is clipped to the range of the last ``window + delays - 1``
        observations, widened on each side by this fraction of that range (``None``: no
        clipping). 1.0 still lets a forecast double the recent range within its horizon.
        See `episodic_koopman.envelope`.
    """

    max_rank: int = 16
    stride: int = 8
    stride_doublings: int = 2
    stride_doubling_at: int = 6144
    refit_every: int | None = None
    stabilize: str = "clip"
    lifting: str = "identity"
    n_components: int = 64
    bandwidth: float = 2.0
    calibration_window: int = 200
    early_grading: bool = True
    detrend: bool = False
    trend_gate: float | None = TREND_GATE
    classical_experts: str = "last,seasonal,damped,ar,seasonal_ar,theta_seasonal"
    envelope: float | None = 1.0

    def __post_init__(self) -> None:
        v.check_positive_int("max_rank", self.max_rank, 1, MAX_FEATURES)
        v.check_positive_int("stride", self.stride, 1, MAX_STRIDE)
        v.check_positive_int("stride_doublings", self.stride_doublings, 0, 10)
        v.check_positive_int("stride_doubling_at", self.stride_doubling_at, 1, 10**12)
        if self.refit_every is not None:
            v.check_positive_int("refit_every", self.refit_every, 1, 10**12)
        v.check_choice("stabilize", self.stabilize, ("clip", "none"))
        v.check_choice("lifting", self.lifting, ("identity", "rff"))
        v.check_positive_int("n_components", self.n_components, 1, MAX_FEATURES)
        _positive_number("bandwidth", self.bandwidth)
        v.check_positive_int("calibration_window", self.calibration_window, 1, 1_000_000)
        if not isinstance(self.early_grading, bool):
            raise TypeError(f"early_grading must be true or false, got {self.early_grading!r}")
        if not isinstance(self.detrend, bool):
            raise TypeError(f"detrend must be true or false, got {self.detrend!r}")
        if self.trend_gate is not None:
            _positive_number("trend_gate", self.trend_gate)
        self.classical_names()  # validates
        if self.envelope is not None:
            _non_negative_number("envelope", self.envelope)

    def classical_names(self) -> list[str]:
        """The classical experts, in the order given."""
        if not isinstance(self.classical_experts, str):
            given = self.classical_experts
            raise TypeError(f"classical_experts must be a comma-separated string, got {given!r}")
        names = [part.strip() for part in self.classical_experts.split(",") if part.strip()]
        for name in names:
            v.check_choice("classical_experts", name, CLASSICAL_EXPERTS)
        if len(set(names)) != len(names):
            raise ValueError(f"classical_experts lists a name twice: {self.classical_experts!r}")
        return names

    @property
    def max_stride(self) -> int:
        """The longest stride `stride_at` gives: doubled at most ``stride_doublings`` times,
        and not past `MAX_STRIDE` (so ``stride=1_000_000``, which never scores, stays valid)."""
        longest = self.stride
        for _ in range(self.stride_doublings):
            if 2 * longest > MAX_STRIDE:
                break
            longest *= 2
        return longest

    def stride_at(self, n: int) -> int:
        """The stride in force at observation count ``n``: ``stride`` until
        ``stride_doubling_at``, then doubled at every doubling of ``n`` (at most
        ``stride_doublings`` times).

        >>> config = ModelConfig(stride=8, stride_doublings=2, stride_doubling_at=1000)
        >>> [config.stride_at(n) for n in (999, 1000, 1999, 2000, 4000, 10**6)]
        [8, 16, 16, 32, 32, 32]
        """
        if self.stride_doublings == 0 or n < self.stride_doubling_at:
            return self.stride
        doublings = (n // self.stride_doubling_at).bit_length()  # 1 from at, 2 from 2 at, ...
        stride = self.stride << min(doublings, self.stride_doublings)
        return stride if stride <= MAX_STRIDE else self.max_stride  # (the loop only here)

    @property
    def n_lifted(self) -> int:
        """Features the lifting adds to the delay vector."""
        return self.n_components if self.lifting == "rff" else 0


def check_constructor(
    delays: int | None,
    window: int,
    rank: RankRule,
    memory: MemoryConfig | None,
    episode_horizon: int,
    level: float,
    seed: int,
    dt: float,
    config: ModelConfig | None,
) -> None:
    """Validate `EpisodicKoopman`'s own parameters (each config validates itself)."""
    if delays is not None:  # None: chosen from the data (`episodic_koopman.auto_embedding`)
        v.check_positive_int("delays", delays, 1, MAX_FEATURES)
    v.check_positive_int("window", window, 2, 1_000_000)
    validate_rank_rule(rank)
    if memory is not None and not isinstance(memory, MemoryConfig):
        raise TypeError(
            f"memory must be a MemoryConfig or None, got {memory!r} (memory=False "
            "is now memory=None; the flat form still takes a bool)"
        )
    if config is not None and not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a ModelConfig or None, got {config!r}")
    if config is not None and config.detrend and memory is not None:
        experts = {name.strip() for name in memory.experts.split(",")}
        if memory.strategy == "transfer" or "transfer" in experts:
            # Its stored fits propagate the raw state: they keep no trend line.
            raise ValueError(
                "detrend=True cannot be combined with the 'transfer' memory expert (its "
                "stored fits carry no trend line): leave 'transfer' out of the memory's "
                "strategy and experts, or set detrend=False"
            )
    v.check_positive_int("episode_horizon", episode_horizon, 1, 100_000)
    v.check_fraction("level", level)
    v.check_positive_int("seed", seed, 0, 2**32 - 1)
    _positive_number("dt", dt)
    state_delays = memory.state_delays if memory is not None else None
    if state_delays is not None and state_delays > window:
        raise ValueError(f"state_delays must be <= window ({window}), got {state_delays}")
