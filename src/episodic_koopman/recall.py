"""Recall: matching the present against memory.

Matching has two stages. FAISS finds candidates by L2 distance between keys
(`episode_key`), and the candidates are then reranked by the exact distance
(`episodic_koopman.rerank`)::

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

Matched episodes are weighted by attention, ``softmax(-D / (tau * scale))``;
`episodic_koopman.corrections` turns them into a corrected forecast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from .einsum import einsum
from .jit import kernel
from .numpy_order import add_reduce
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
    b, d, c = histories.shape
    if c == 1 and b and d:
        # One channel: the same floats by two compiled loops around NumPy's einsum (whose
        # order of addition the squares' sum keeps), instead of a dozen NumPy calls.
        windows = np.ascontiguousarray(histories).reshape(b, d)
        mean, centered = np.empty(b), np.empty((b, d))
        _center(windows, mean, centered)
        squares = einsum("bij,bij->bj", centered[:, :, None], centered[:, :, None])
        _scale(centered, mean, squares.reshape(b))
        return centered
    mean = histories.sum(axis=1, keepdims=True) / d
    centered = histories - mean
    std = np.sqrt(einsum("bij,bij->bj", centered, centered) / d)[:, None, :]
    scale = np.where(std > 1e-12 * np.maximum(np.abs(mean), 1.0), std, 1.0)
    return (centered / scale).reshape(histories.shape[0], -1)


@kernel
def _center(windows: np.ndarray, mean: np.ndarray, centered: np.ndarray) -> None:
    """Each window's mean (summed as NumPy sums it) and the window less it."""
    d = windows.shape[1]
    for b in range(windows.shape[0]):
        m = add_reduce(windows[b], 0, d) / d
        mean[b] = m
        for i in range(d):
            centered[b, i] = windows[b, i] - m


@kernel
def _scale(centered: np.ndarray, mean: np.ndarray, squares: np.ndarray) -> None:
    """Divide each centred window by its standard deviation, or by 1 where that is
    negligible against its level (NaN-propagating, as ``np.maximum`` and ``np.where``)."""
    d = centered.shape[1]
    for b in range(centered.shape[0]):
        std = np.sqrt(squares[b] / d)
        level = abs(mean[b])
        if not level > 1.0 and not np.isnan(level):
            level = 1.0
        scale = std if std > 1e-12 * level else 1.0
        for i in range(d):
            centered[b, i] = centered[b, i] / scale


def episode_key(signature: Signature, state: np.ndarray, weights: KeyWeights) -> np.ndarray:
    """Fixed-length key whose squared L2 distance mirrors the exact distance (float32)."""
    return episode_keys(signature, state[None], weights)[0]


def episode_keys(signature: Signature, states: np.ndarray, weights: KeyWeights) -> np.ndarray:
    """Keys of several states ``(B, S)`` that share one signature: ``(B, dim)`` float32."""
    return keys_of_row(signature_row(signature, weights), states, weights)


#: The newest signature's key coordinates (`signature_row`): a scored tick's query makes
#: them, and the episodes made with its fit until the next scored tick are keyed by them.
_last_row: tuple[Signature, KeyWeights, np.ndarray] | None = None


def signature_row(signature: Signature, weights: KeyWeights) -> np.ndarray:
    """`signature_columns` of one signature, ``(1, width)`` (read-only).

    The last signature's are kept: signatures are never changed once made, so this is
    a pure function of the signature, whatever was called before.
    """
    global _last_row
    cached = _last_row
    if cached is not None and cached[0] is signature and cached[1] == weights:
        return cached[2]
    row = signature_columns(signature.eigenvalues[None], signature.modes[None], weights)
    row.flags.writeable = False
    _last_row = (signature, weights, row)
    return row


def signature_keys(
    eigenvalues: np.ndarray, modes: np.ndarray, states: np.ndarray, weights: KeyWeights
) -> np.ndarray:
    """Keys of ``B`` states, each with its own (or, with a leading 1, one shared) signature.

    ``eigenvalues`` is ``(B or 1, r_max)``, ``modes`` ``(B or 1, r_max, q)``: every
    coordinate is the same product as `episode_keys` computes, so the keys are too.
    """
    return keys_of_row(signature_columns(eigenvalues, modes, weights), states, weights)


def keys_of_row(signature: np.ndarray, states: np.ndarray, weights: KeyWeights) -> np.ndarray:
    """Keys from signature coordinates ``(B or 1, width)`` (`signature_columns`) and
    states ``(B, S)``."""
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


def attention_weights(distances: np.ndarray, tau: float, scale: float) -> np.ndarray:
    """Softmax of ``-distance / (tau * scale)``; ``scale`` makes ``tau`` unit-free."""
    logits = -(distances - distances.min()) / max(tau * scale, 1e-12)
    weights = np.exp(logits)
    return weights / weights.sum()
