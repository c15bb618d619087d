"""Recall: matching the present against memory, and correcting the forecast.

Matching has two stages. FAISS finds candidates by L2 distance between keys
(`episode_key`), and the candidates are then reranked by the exact distance
(`exact_distances`)::

    D^2 = w_eig^2 W2(eigenvalues)^2 + w_mode^2 M(matched modes)^2 + w_state^2 S(state)^2

``W2`` is the 2-Wasserstein distance between the padded eigenvalue sets (an
optimal assignment), ``M`` the RMS distance between the modes that assignment
matches, and ``S`` the RMS distance between normalised delay vectors. The key
is built so that its squared L2 distance is the same sum with the canonical
(amplitude) order in place of the optimal assignment. The two distances are
equal whenever the canonical order is the optimal matching (the common case
for nearby spectra), so FAISS ranks candidates by nearly the exact distance.

The spectrum says *which* dynamics; the state says *where* on them. Matching on
eigenvalues alone replays the right dynamics at the wrong phase, so the state
term matters (see the accuracy notes in the README).

Matched episodes are weighted by attention, ``softmax(-D / (tau * scale))``,
and one of three strategies (`Residual`, `Analog`, `Transfer`) turns them into
a corrected forecast.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
from river import drift
from scipy.optimize import linear_sum_assignment

from .operator import stabilize_eigenvalues
from .spectrum import Signature

Alignment = Literal["zscore", "additive", "multiplicative", "last", "none"]


@dataclass(frozen=True)
class KeyWeights:
    """Weights of the eigenvalue, mode and state terms of the match distance."""

    eigenvalues: float = 1.0
    modes: float = 0.5
    state: float = 1.0


def normalized_state(history: np.ndarray) -> np.ndarray:
    """Delay window ``(d, c)`` z-scored per channel over the window, flattened time-major.

    Level and scale are removed so that a regime recurring at another level, or
    another series at another scale, matches on shape.
    """
    return normalized_states(history[None])[0]


def normalized_states(histories: np.ndarray) -> np.ndarray:
    """`normalized_state` of many windows ``(B, d, c)`` at once: ``(B, d * c)``."""
    d = histories.shape[1]
    mean = histories.sum(axis=1, keepdims=True) / d
    centered = histories - mean
    std = np.sqrt(np.einsum("bij,bij->bj", centered, centered) / d)[:, None, :]
    scale = np.where(std > 1e-12 * np.maximum(np.abs(mean), 1.0), std, 1.0)
    return (centered / scale).reshape(histories.shape[0], -1)


def episode_key(signature: Signature, state: np.ndarray, weights: KeyWeights) -> np.ndarray:
    """Fixed-length key whose squared L2 distance mirrors `exact_distances` (float32)."""
    return episode_keys(signature, state[None], weights)[0]


def episode_keys(signature: Signature, states: np.ndarray, weights: KeyWeights) -> np.ndarray:
    """Keys of several states ``(B, S)`` that share one signature: ``(B, dim)`` float32."""
    return signature_keys(signature.eigenvalues[None], signature.modes[None], states, weights)


def signature_keys(
    eigenvalues: np.ndarray, modes: np.ndarray, states: np.ndarray, weights: KeyWeights
) -> np.ndarray:
    """Keys of ``B`` states, each with its own (or, with a leading 1, one shared) signature.

    ``eigenvalues`` is ``(B or 1, r_max)``, ``modes`` ``(B or 1, r_max, q)``: every
    coordinate is the same product as `episode_keys` computes, so the keys are too.
    """
    signature = signature_columns(eigenvalues, modes, weights)
    keys = np.empty((states.shape[0], signature.shape[1] + states.shape[1]), dtype=np.float32)
    keys[:, : signature.shape[1]] = signature
    keys[:, signature.shape[1] :] = state_columns(states, weights)
    return keys


def signature_columns(
    eigenvalues: np.ndarray, modes: np.ndarray, weights: KeyWeights
) -> np.ndarray:
    """The eigenvalue and mode coordinates of keys, one row per signature: ``(F, 2 r_max +
    modes)`` float32. A key's coordinates are each a product of one value, so the rows of
    many episodes sharing few fits can be made per fit and gathered (the same values)."""
    r_max = eigenvalues.shape[1]
    n_modes = 2 * modes.shape[1] * modes.shape[2] if weights.modes > 0 else 0
    columns = np.empty((eigenvalues.shape[0], 2 * r_max + n_modes), dtype=np.float32)
    eig_scale = weights.eigenvalues / np.sqrt(r_max)
    columns[:, 0 : 2 * r_max : 2] = eigenvalues.real * eig_scale
    columns[:, 1 : 2 * r_max : 2] = eigenvalues.imag * eig_scale
    if n_modes:
        flat = np.ascontiguousarray(modes).view(np.float64).reshape(modes.shape[0], -1)
        columns[:, 2 * r_max :] = flat * (weights.modes / np.sqrt(r_max))
    return columns


def state_columns(states: np.ndarray, weights: KeyWeights) -> np.ndarray:
    """The state coordinates of keys (float64: rounded to float32 where they are stored)."""
    return states * (weights.state / np.sqrt(max(states.shape[1], 1)))


#: Eigenvalue moduli past this are rare (unstable modes are clipped when forecasting);
#: beyond it a key's coordinate saturates, which only blurs candidate proposals.
_EIGENVALUE_BOUND = 1.25


def key_bounds(
    r_max: int, mode_length: int, state_delays: int, n_channels: int, weights: KeyWeights
) -> np.ndarray:
    """The largest magnitude of each coordinate of `episode_keys` (``mode_length`` as in
    `key_dimension`), so that keys can be quantised over a fixed range.

    Unit-norm modes have coordinates within 1, and a window of ``d`` values z-scored
    over itself has no value beyond ``sqrt(d - 1)``.
    """
    state_length = state_delays * n_channels
    eig = _EIGENVALUE_BOUND * weights.eigenvalues / np.sqrt(r_max)
    mode = weights.modes / np.sqrt(r_max)
    state = weights.state * np.sqrt(max(state_delays - 1, 1)) / np.sqrt(max(state_length, 1))
    bounds = np.concatenate(
        [
            np.full(2 * r_max, eig),
            np.full(2 * r_max * mode_length, mode),
            np.full(state_length, state),
        ]
    )
    # A zero weight makes a coordinate always zero: any positive range holds it exactly.
    return np.where(bounds > 0, bounds, 1.0).astype(np.float32)


def key_dimension(r_max: int, mode_length: int, state_length: int) -> int:
    """Length of `episode_key` (``mode_length`` is 0 when modes are left out of keys)."""
    return 2 * r_max + 2 * r_max * mode_length + state_length


def _matchings(
    signature: Signature, eigenvalues: np.ndarray, cand_ranks: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Squared distances between the query's and each candidate's eigenvalues ``(n, r, r)``,
    and each candidate's optimal matching ``(n, r)``."""
    n, r = eigenvalues.shape
    diff = signature.eigenvalues[None, :, None] - eigenvalues[:, None, :]
    cost = diff.real**2 + diff.imag**2
    perms = np.empty((n, r), dtype=np.intp)
    perms[:] = np.arange(r)
    for i, rank in enumerate(cand_ranks):
        k = max(signature.rank, rank)
        perms[i, :k] = linear_sum_assignment(cost[i, :k, :k])[1]  # rows come back as 0..k-1
    return cost, perms


def _eigenvalue_term(cost: np.ndarray, perms: np.ndarray, weight: float) -> np.ndarray:
    """``(weight * W2)^2`` per candidate from `_matchings` (each row on its own)."""
    n, r = perms.shape
    # Means as NumPy's own mean computes them (sum, then divide), without its dispatch;
    # the matched costs gathered by one index (take_along_axis builds the same, slower).
    matched = cost[np.arange(n)[:, None], np.arange(r), perms]
    return (weight * np.sqrt(np.add.reduce(matched, axis=1) / r)) ** 2


#: Eigenvalue terms by query and candidate spectra. Candidates made with one fit share its
#: eigenvalues, and one fit in force queries for several ticks, so the same pairs recur.
_eigenvalue_terms_kept: dict[tuple[bytes, bytes, int, int, float], float] = {}
_EIGENVALUE_TERMS_KEPT = 1024


def _eigenvalue_terms(
    signature: Signature, eigenvalues: np.ndarray, cand_ranks: list[int], weight: float
) -> np.ndarray:
    """`_eigenvalue_term` of each candidate, those of spectra seen before reused.

    A row's term is a function of the two spectra alone (the same floats computed on
    its own or in any batch), so reusing one changes nothing.
    """
    kept = _eigenvalue_terms_kept
    query, query_rank = signature.eigenvalues.tobytes(), signature.rank
    out = np.empty(eigenvalues.shape[0])
    missing: list[int] = []
    keys = []
    for i, rank in enumerate(cand_ranks):
        key = (query, eigenvalues[i].tobytes(), query_rank, rank, weight)
        term = kept.get(key)
        if term is None:
            missing.append(i)
            keys.append(key)
        else:
            out[i] = term
    if missing:
        rows = np.array(missing)
        cost, perms = _matchings(signature, eigenvalues[rows], [cand_ranks[i] for i in missing])
        terms = _eigenvalue_term(cost, perms, weight)
        out[rows] = terms
        if len(kept) + len(keys) > _EIGENVALUE_TERMS_KEPT:
            kept.clear()  # the spectra of a few fits recur, then move on
        kept.update(zip(keys, terms.tolist(), strict=True))
    return out


def exact_distances(
    signature: Signature,
    state: np.ndarray,
    eigenvalues: np.ndarray,
    modes: np.ndarray,
    states: np.ndarray,
    weights: KeyWeights,
    ranks: np.ndarray | None = None,
    state_terms: np.ndarray | None = None,
) -> np.ndarray:
    """Exact rerank distances from the query to each candidate (rows of the arrays).

    ``ranks`` (the candidates' signature ranks) only saves counting their padding, and
    ``state_terms`` (``state_weight * S`` per candidate, as computed here) the state term.
    """
    n = eigenvalues.shape[0]
    if n == 0:
        return np.zeros(0)
    # Signatures hold their eigenvalues first and zero padding after. Padding matches
    # padding at no cost, so only the leading max(rank_a, rank_b) square needs solving.
    cand_ranks = (ranks if ranks is not None else np.count_nonzero(eigenvalues, axis=1)).tolist()
    if not (weights.modes > 0 and signature.modes.size):
        total = _eigenvalue_terms(signature, eigenvalues, cand_ranks, weights.eigenvalues)
    else:
        cost, perms = _matchings(signature, eigenvalues, cand_ranks)
        total = _eigenvalue_term(cost, perms, weights.eigenvalues)
        # Modes as interleaved real/imaginary parts: the same Euclidean distance, no complex abs.
        query_modes = np.ascontiguousarray(signature.modes).view(np.float64)
        cand_modes = np.ascontiguousarray(modes).view(np.float64)[np.arange(n)[:, None], perms]
        mode_dist = np.sqrt(np.sum((query_modes[None] - cand_modes) ** 2, axis=2).mean(axis=1))
        total = total + (weights.modes * mode_dist) ** 2
    if state.size:
        if state_terms is None:
            state_terms = weights.state * _state_distances(states, state)
        total = total + state_terms**2
    # A missing term adds +0.0, which changes no float: the same sum as all three.
    return np.sqrt(total)


def _state_distances(states: np.ndarray, state: np.ndarray) -> np.ndarray:
    """RMS distance of each row of ``states`` to ``state`` (each row on its own)."""
    gap = states - state
    return np.sqrt(np.add.reduce(gap * gap, axis=1) / state.size)


def nearest_exact(
    signature: Signature,
    state: np.ndarray,
    ids: np.ndarray,
    records: dict[str, np.ndarray],
    weights: KeyWeights,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the ``k`` candidates nearest by `exact_distances` (ties by id), and those
    distances: what ranking every candidate gives, with fewer optimal assignments.

    The state term alone bounds a distance from below (the other terms add non-negative
    amounts), and costs no assignment. Candidates are taken in order of that bound;
    once ``k`` exact distances are known, a candidate whose bound exceeds the ``k``-th
    of them cannot be among the nearest. `exact_distances` treats every row on its
    own, so the distances are those of ranking all candidates at once.
    """

    state_terms: np.ndarray | None = None

    def exact(rows: np.ndarray) -> np.ndarray:
        return exact_distances(
            signature,
            state,
            records["eigenvalues"][rows],
            records["modes"][rows],
            records["state"][rows],
            weights,
            records["rank"][rows],
            None if state_terms is None else state_terms[rows],
        )

    n = ids.shape[0]
    if n <= k or not state.size or weights.state <= 0:
        distances = exact(np.arange(n))
        order = np.lexsort((ids, distances))[:k]
        return order, distances[order]
    # Each row's state term, as `exact_distances` computes it, is kept for it.
    state_terms = weights.state * _state_distances(records["state"], state)
    # Shrunk by a relative 1e-12: a bound, whatever the rounding of the exact sum.
    floor = state_terms * (1.0 - 1e-12)
    by_floor = np.argsort(floor, kind="stable")
    rows = by_floor[:k]
    distances = exact(rows)
    rest = by_floor[k:]
    rest = rest[floor[rest] <= distances.max()]
    if rest.size:
        rows = np.concatenate([rows, rest])
        distances = np.concatenate([distances, exact(rest)])
    order = np.lexsort((ids[rows], distances))[:k]
    return rows[order], distances[order]


def attention_weights(distances: np.ndarray, tau: float, scale: float) -> np.ndarray:
    """Softmax of ``-distance / (tau * scale)``; ``scale`` makes ``tau`` unit-free."""
    logits = -(distances - distances.min()) / max(tau * scale, 1e-12)
    weights = np.exp(logits)
    return weights / weights.sum()


def _quantile(values: np.ndarray, q: float) -> float:
    """Linear-interpolation quantile (NumPy's default) via partition: cheap on small arrays."""
    position = q * (values.size - 1)
    low = int(np.floor(position))
    high = min(low + 1, values.size - 1)
    part = np.partition(values, (low, high))
    return float(part[low] + (part[high] - part[low]) * (position - low))


class AdaptiveThreshold:
    """Recall only when the best match is at least as close as a quantile of recent ones.

    With ``quantile=1.0`` every match recalls; with ``0.5`` only the better half.
    Before ``min_history`` matches have been seen, every match recalls.
    """

    def __init__(self, quantile: float, window: int = 200, min_history: int = 10) -> None:
        self.quantile = quantile
        self.window = window
        self.min_history = min_history
        self._recent: deque[float] = deque(maxlen=window)
        self._cut = np.inf
        self._median = 1.0

    def _refresh(self) -> None:
        values = np.fromiter(self._recent, float)
        self._median = _quantile(values, 0.5) if values.size else 1.0
        enough = self.quantile < 1.0 and values.size >= self.min_history
        self._cut = _quantile(values, self.quantile) if enough else np.inf

    def admits(self, best: float) -> bool:
        return best <= self._cut

    def observe(self, best: float) -> None:
        self._recent.append(best)
        self._refresh()

    def scale(self) -> float:
        """Typical best distance (median of recent ones), the unit of ``tau``."""
        return self._median

    def get_state(self) -> np.ndarray:
        return np.fromiter(self._recent, float)

    def set_state(self, values: np.ndarray) -> None:
        # tolist gives the same Python floats as float() of each, without a loop.
        self._recent = deque(
            np.asarray(values, dtype=np.float64).ravel().tolist(), maxlen=self.window
        )
        self._refresh()


# -- correction strategies -------------------------------------------------------------


@dataclass(frozen=True)
class RecallContext:
    """What a strategy may use about the present (nothing after the forecast origin)."""

    plain: np.ndarray  # (H, c) plain Koopman forecast, raw units
    history: np.ndarray  # (d, c) the last d raw observations
    ref_mean: np.ndarray  # (c,) current standardisation
    ref_scale: np.ndarray  # (c,)
    lift: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # raw window -> psi
    readout: slice
    stabilize: str


class Correction(Protocol):
    """Turns matched episodes and attention weights into ``(mean, spread)``, each ``(H, c)``."""

    name: str

    def correct(
        self, context: RecallContext, records: dict[str, np.ndarray], weights: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]: ...


def _extend(values: np.ndarray, horizon: int) -> np.ndarray:
    """Cut ``(n, H_mem, c)`` episode tracks to ``horizon``, holding the last step beyond."""
    if values.shape[1] >= horizon:
        return values[:, :horizon]
    tail = np.repeat(values[:, -1:], horizon - values.shape[1], axis=1)
    return np.concatenate([values, tail], axis=1)


def _weighted(tracks: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = np.einsum("e,ehc->hc", weights, tracks)
    spread = np.sqrt(np.einsum("e,ehc->hc", weights, (tracks - mean) ** 2))
    return mean, spread


def _window_mean(windows: np.ndarray) -> np.ndarray:
    """``windows.mean(axis=-2, keepdims=True)``, the same floats without its dispatch."""
    return np.add.reduce(windows, axis=-2, keepdims=True) / windows.shape[-2]


def _window_std(windows: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``windows.std(axis=-2, keepdims=True)`` from its mean: the same steps as NumPy's."""
    centered = windows - mean
    return np.sqrt(np.add.reduce(centered * centered, axis=-2, keepdims=True) / windows.shape[-2])


def align(
    continuation: np.ndarray, history_then: np.ndarray, history_now: np.ndarray, how: Alignment
) -> np.ndarray:
    """Map what followed past windows to the present level (and scale), per channel.

    ``continuation`` is ``(..., H, c)``, ``history_then`` ``(..., d, c)`` (the
    matched windows) and ``history_now`` ``(d, c)``. ``zscore`` matches the mean
    and standard deviation of the delay windows, ``additive`` the means, and
    ``multiplicative`` scales by the ratio of the means (epidemic curves scale). It
    falls back to additive where a mean is not positive. ``last`` matches the last
    values, and ``none`` replays the continuation as stored.
    """
    if how == "none":
        return continuation
    mean_then = _window_mean(history_then)
    mean_now = _window_mean(history_now)
    if how == "additive":
        return continuation - mean_then + mean_now
    if how == "last":
        return continuation - history_then[..., -1:, :] + history_now[-1:, :]
    if how == "multiplicative":
        positive = (mean_then > 0) & (mean_now > 0)
        ratio = np.where(positive, mean_now / np.where(positive, mean_then, 1.0), 1.0)
        return np.where(positive, continuation * ratio, continuation - mean_then + mean_now)
    if how == "zscore":
        std_then = _window_std(history_then, mean_then)
        std_now = _window_std(history_now, mean_now)
        ok = std_then > 1e-12 * np.maximum(np.abs(mean_then), 1.0)
        ratio = np.where(ok, std_now / np.where(ok, std_then, 1.0), 1.0)
        return (continuation - mean_then) * ratio + mean_now
    raise ValueError(f"unknown alignment {how!r}")


class Residual:
    """Add the attention-weighted errors that the matched episodes' operators made.

    Errors are stored in raw units and rescaled by the ratio of the current to
    the episode's standardisation scale.
    """

    name = "residual"

    def correct(
        self, context: RecallContext, records: dict[str, np.ndarray], weights: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        horizon = context.plain.shape[0]
        errors = (records["continuation"] - records["forecast"]) / records["ref_scale"][:, None, :]
        errors = _extend(errors, horizon) * context.ref_scale
        delta, spread = _weighted(errors, weights)
        return context.plain + delta, spread


class Analog:
    """Replay what followed each matched window, aligned to the present level.

    The mean is ``plain + blend * (analog - plain)``: ``blend=1`` is the pure
    analog forecast.
    """

    name = "analog"

    def __init__(self, alignment: Alignment = "zscore", blend: float = 1.0) -> None:
        self.alignment = alignment
        self.blend = blend

    def correct(
        self, context: RecallContext, records: dict[str, np.ndarray], weights: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        horizon = context.plain.shape[0]
        # Align on as many recent observations as the episodes stored (their state window).
        now = context.history[-records["history"].shape[1] :]
        tracks = align(records["continuation"], records["history"], now, self.alignment)
        analog, spread = _weighted(_extend(tracks, horizon), weights)
        if horizon > tracks.shape[1]:
            # Beyond the stored continuation, carry the analog's offset from the plain forecast.
            offset = analog[tracks.shape[1] - 1] - context.plain[tracks.shape[1] - 1]
            analog[tracks.shape[1] :] = context.plain[tracks.shape[1] :] + offset
        return context.plain + self.blend * (analog - context.plain), spread


class Transfer:
    """Propagate the current state with the operator fitted just after each matched window.

    Each episode keeps the modes and eigenvalues of the fit taken when its
    forecast horizon had passed, with that fit's standardisation. The current
    delay window is standardised and lifted in that frame, propagated, and mapped
    back.
    """

    name = "transfer"

    def correct(
        self, context: RecallContext, records: dict[str, np.ndarray], weights: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        horizon = context.plain.shape[0]
        steps = np.arange(1, horizon + 1)[:, None]
        tracks = []
        for i in range(weights.shape[0]):
            rank = int(records["succ_rank"][i])
            mean, scale = records["succ_ref_mean"][i], records["succ_ref_scale"][i]
            if rank == 0:
                tracks.append(np.repeat(mean[None, :], horizon, axis=0))
                continue
            modes = records["succ_modes"][i][:, :rank]
            lam = stabilize_eigenvalues(records["succ_eigenvalues"][i][:rank], context.stabilize)
            psi = context.lift(context.history, mean, scale)
            b = np.linalg.lstsq(modes, psi.astype(np.complex128), rcond=None)[0]
            path = ((lam[None, :] ** steps) * b) @ modes[context.readout].T
            tracks.append(path.real * scale + mean)
        return _weighted(np.stack(tracks), weights)


#: Memory experts: a strategy, with the analog's alignment in its name.
MEMORY_EXPERTS = (
    "analog",
    "analog_last",
    "analog_additive",
    "analog_multiplicative",
    "residual",
    "transfer",
)


def make_correction(
    strategy: str, alignment: Alignment = "zscore", blend: float = 1.0
) -> Correction:
    """The correction called ``strategy``; ``analog_<alignment>`` names an analog expert."""
    if strategy == "residual":
        return Residual()
    if strategy == "transfer":
        return Transfer()
    if strategy == "analog":
        return Analog(alignment=alignment, blend=blend)
    if strategy.startswith("analog_"):
        return Analog(alignment=strategy.removeprefix("analog_"), blend=blend)  # type: ignore[arg-type]
    raise ValueError(f"unknown memory strategy {strategy!r}; known: {list(MEMORY_EXPERTS)}")


# -- drift gating ----------------------------------------------------------------------

DRIFT_DETECTORS = ("page_hinkley", "kswin")


class DriftGate:
    """Open recall for ``span`` steps after river's detector flags drift in forecast errors.

    Drift is dated by the observation that revealed it, so when the errors are fed
    does not matter. Only detectors whose state can be saved exactly are offered:
    ``page_hinkley`` and ``kswin`` (ADWIN keeps its state in a compiled object).
    """

    def __init__(self, detector: str, span: int, seed: int = 0) -> None:
        if detector not in DRIFT_DETECTORS:
            raise ValueError(
                f"drift_gate must be one of {DRIFT_DETECTORS} or None, got {detector!r}"
            )
        self.detector_name = detector
        self.span = span
        self.seed = seed
        self.detector = self._new_detector()
        self.last_drift_at = -(10**18)  # closed until the first drift
        self.n_drifts = 0

    def _new_detector(self) -> Any:
        if self.detector_name == "page_hinkley":
            return drift.PageHinkley()
        return drift.KSWIN(seed=self.seed)

    def update(self, error: float, at: int) -> None:
        """Feed the one-step error observed at observation index ``at``."""
        self.detector.update(error)
        if self.detector.drift_detected:
            self.last_drift_at = at
            self.n_drifts += 1

    def is_open(self, now: int) -> bool:
        """Whether observation index ``now`` lies within ``span`` steps after a drift."""
        return now - self.last_drift_at <= self.span

    def get_state(self) -> dict[str, np.ndarray]:
        d = self.detector
        state = {
            "gate": np.array([self.last_drift_at, self.n_drifts], dtype=np.int64),
            "drift_detected": np.array(d._drift_detected),
        }
        if self.detector_name == "page_hinkley":
            state["ph"] = np.array(
                [
                    d._x_mean.n,
                    d._x_mean._mean,
                    d._sum_increase,
                    d._sum_decrease,
                    d._min_increase,
                    d._max_decrease,
                ]
            )
        else:
            version, internal, gauss = d._rng.getstate()
            state["kswin_window"] = np.array(d.window, dtype=np.float64)
            state["kswin_counts"] = np.array([d.n, d.p_value], dtype=np.float64)
            state["kswin_rng"] = np.array(internal, dtype=np.int64)
            state["kswin_rng_meta"] = np.array(
                [version, np.nan if gauss is None else gauss], dtype=np.float64
            )
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self.detector = self._new_detector()
        d = self.detector
        self.last_drift_at, self.n_drifts = (int(v) for v in state["gate"])
        d._drift_detected = bool(state["drift_detected"])
        if self.detector_name == "page_hinkley":
            n, mean, inc, dec, min_inc, max_dec = (float(v) for v in state["ph"])
            d._x_mean.n, d._x_mean._mean = n, mean
            d._sum_increase, d._sum_decrease = inc, dec
            d._min_increase, d._max_decrease = min_inc, max_dec
        else:
            d.window = deque((float(v) for v in state["kswin_window"]), maxlen=d.window_size)
            d.n, d.p_value = (float(v) for v in state["kswin_counts"])
            d.n = int(d.n)
            version, gauss = state["kswin_rng_meta"]
            rng = random.Random()
            rng.setstate(
                (
                    int(version),
                    tuple(int(v) for v in state["kswin_rng"]),
                    None if np.isnan(gauss) else float(gauss),
                )
            )
            d._rng = rng
