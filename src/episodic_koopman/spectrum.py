"""Spectra of fitted operators: what they say, and how two of them compare.

A `Spectrum` describes one fit for people (frequencies, periods, growth
rates, amplitudes). A `Signature` is its fixed-length, canonical form for
the memory: eigenvalues ordered by amplitude (conjugate pairs kept together,
positive frequency first) and padded with zeros to ``r_max``, and the modes
normalised for scale and phase. Two signatures compare by the 2-Wasserstein
distance between their eigenvalue sets (an optimal assignment, since both sets
carry uniform weights) and the Euclidean distance between the modes that the
assignment matches.

>>> import numpy as np
>>> a = np.array([0.9 + 0.1j, 0.9 - 0.1j, 0.5 + 0j])
>>> b = np.array([0.5 + 0j, 0.9 - 0.1j, 0.9 + 0.1j])
>>> round(eigenvalue_wasserstein(a, b)[0], 12)
0.0
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from .jit import kernel

#: Imaginary parts below this (relative to the magnitude) count as real eigenvalues.
_REAL_TOL = 1e-9


@dataclass(frozen=True)
class Spectrum:
    """Eigenvalues, modes and amplitudes of one fit, with ``dt`` time units per step."""

    eigenvalues: np.ndarray
    amplitudes: np.ndarray
    modes: np.ndarray
    dt: float = 1.0

    @property
    def frequencies(self) -> np.ndarray:
        """Cycles per time unit (negative for the conjugate of a pair)."""
        return np.angle(self.eigenvalues) / (2.0 * np.pi * self.dt)

    @property
    def growth_rates(self) -> np.ndarray:
        """Continuous-time growth rate ``log|lambda| / dt`` (negative = decaying)."""
        with np.errstate(divide="ignore"):
            return np.log(np.abs(self.eigenvalues)) / self.dt

    def summary(self) -> list[dict[str, Any]]:
        """One JSON-safe row per mode of non-negative frequency, strongest first."""
        rows = []
        for i in canonical_order(self.eigenvalues, self.amplitudes):
            lam = self.eigenvalues[i]
            if lam.imag < 0 and abs(lam.imag) > _REAL_TOL * max(abs(lam), 1e-300):
                continue
            frequency = float(self.frequencies[i])
            magnitude = float(abs(lam))
            growth = float(np.log(magnitude) / self.dt) if magnitude > 0 else -1e300
            rows.append(
                {
                    "eigenvalue": [float(lam.real), float(lam.imag)],
                    "magnitude": magnitude,
                    "frequency": frequency,
                    "period": float(1.0 / frequency) if frequency > 0 else None,
                    "growth_rate": max(growth, -1e300),
                    "amplitude": float(abs(self.amplitudes[i])),
                }
            )
        return rows


#: Members of a group of modes (a real eigenvalue or a conjugate pair), and its tie-break key.
_Group = tuple[tuple[int, ...], float]


@kernel
def _group_conjugates(parts: np.ndarray, real_tol: float) -> tuple[np.ndarray, np.ndarray]:
    """`_conjugate_groups` of eigenvalues given as ``(re, im)`` pairs, ``parts`` ``(2 n,)``.

    The steps and comparisons of the plain-Python grouping it replaced, one by one:
    ``abs`` of a complex is ``hypot`` in both, and ``max``/``min`` keep the first of
    equals as Python's do.
    """
    n = parts.shape[0] // 2
    lams = np.empty(n, dtype=np.complex128)
    is_real = np.empty(n, dtype=np.bool_)
    unmatched = np.empty(n, dtype=np.int64)  # indices, in order; -1 once taken
    n_unmatched = 0
    for j in range(n):
        z = complex(parts[2 * j], parts[2 * j + 1])
        lams[j] = z
        size = abs(z)
        if 1e-300 > size:  # Python's max(size, 1e-300): the second only if greater
            size = 1e-300
        is_real[j] = abs(z.imag) <= real_tol * size
        if not is_real[j] and z.imag <= 0:
            unmatched[n_unmatched] = j
            n_unmatched += 1
    members = np.full((n, 2), -1, dtype=np.int64)
    ties = np.zeros(n, dtype=np.float64)
    g = 0
    left = n_unmatched  # unmatched indices not yet taken
    for i in range(n):
        z = lams[i]
        if is_real[i]:
            members[g, 0] = i
            ties[g] = 0.0
            g += 1
        elif z.imag > 0:
            members[g, 0] = i
            ties[g] = -z.imag
            if left > 0:
                # Eigenvalues of a real matrix: the partner is the conjugate (LAPACK gives
                # exact ones and puts them next); failing that the nearest, first of equals.
                partner = z.conjugate()
                slot = -1
                for k in range(n_unmatched):
                    if unmatched[k] >= 0 and lams[unmatched[k]] == partner:
                        slot = k
                        break
                if slot < 0:
                    best = np.inf
                    for k in range(n_unmatched):
                        if unmatched[k] >= 0:
                            distance = abs(lams[unmatched[k]] - partner)
                            if slot < 0 or distance < best:
                                slot, best = k, distance
                members[g, 1] = unmatched[slot]
                unmatched[slot] = -1
                left -= 1
            g += 1
    for k in range(n_unmatched):
        if unmatched[k] >= 0:
            members[g, 0] = unmatched[k]
            ties[g] = lams[unmatched[k]].imag
            g += 1
    return members[:g], ties[:g]


#: The newest eigenvalue set, its groups of modes and the last signature made of it.
#: One fit in force is queried at every tick until the next scored tick, with new
#: amplitudes each time: its grouping is made once, and its signature remade only when
#: the order by amplitude changes.
_last_spectrum: _Spectrum | None = None


@dataclass
class _Spectrum:
    """The entry of `_last_spectrum`: an eigenvalue set by value (``key``) and by identity."""

    key: tuple[str, tuple[int, ...], bytes]
    eigenvalues: np.ndarray
    groups: tuple[_Group, ...]
    #: ``(order, r_max)`` and the signature made of them without mode coordinates
    #: (made only from the very array ``eigenvalues``: a fit's, never changed).
    signature: tuple[tuple[bytes, int], Signature] | None = None


def _spectrum_of(eigenvalues: np.ndarray) -> _Spectrum:
    """The `_last_spectrum` entry of ``eigenvalues``, made anew unless it is the last set.

    The grouping is a function of the eigenvalues alone: a pure function, whatever was
    called before.
    """
    global _last_spectrum
    key = (eigenvalues.dtype.str, eigenvalues.shape, eigenvalues.tobytes())
    held = _last_spectrum
    if held is not None and held.key == key:
        if held.eigenvalues is not eigenvalues:  # equal values, another array
            held = _Spectrum(key, eigenvalues, held.groups)
            _last_spectrum = held
        return held
    parts = np.ascontiguousarray(eigenvalues, dtype=np.complex128).view(np.float64)
    members, ties = _group_conjugates(parts.reshape(-1), _REAL_TOL)
    groups = tuple(
        ((a,) if b < 0 else (a, b), tie)
        for (a, b), tie in zip(members.tolist(), ties.tolist(), strict=True)
    )
    held = _last_spectrum = _Spectrum(key, eigenvalues, groups)
    return held


def _conjugate_groups(eigenvalues: np.ndarray) -> tuple[_Group, ...]:
    """The modes of `canonical_order` in groups, and each group's tie-break key.

    A group is a real eigenvalue, a conjugate pair (positive frequency first) or an
    unpaired one; unpaired ones of negative frequency come last.
    """
    return _spectrum_of(eigenvalues).groups


def canonical_order(eigenvalues: np.ndarray, amplitudes: np.ndarray) -> np.ndarray:
    """Indices ordering modes by amplitude, each conjugate pair adjacent (+freq first).

    Ordering by amplitude rather than frequency keeps the leading entries stable
    when the rank changes by a few weak noise modes. Ties (equal amplitudes up to
    rounding) go to the higher frequency.
    """
    return _order(_conjugate_groups(np.asarray(eigenvalues)), amplitudes)


#: Groups sort by strength, then by their tie-break key (their members never compared).
_strength_then_tie = operator.itemgetter(0, 1)


def _order(groups: tuple[_Group, ...], amplitudes: np.ndarray) -> np.ndarray:
    """`canonical_order` of modes in ``groups``. Plain Python: there are at most a few dozen
    modes, and NumPy's per-call overhead would dominate."""
    mags = np.abs(amplitudes).tolist()
    ranked = []
    for members, tie in groups:
        if len(members) == 1:
            strength = mags[members[0]]
        else:
            strength = max(mags[members[0]], mags[members[1]])
        ranked.append((-round(strength, 12), tie, members))
    ranked.sort(key=_strength_then_tie)
    order: list[int] = []
    for group in ranked:
        order.extend(group[2])
    return np.array(order, dtype=np.int64)


def normalize_modes(modes: np.ndarray, reference_rows: slice) -> np.ndarray:
    """Unit-norm columns, each rotated so its largest ``reference_rows`` entry is real > 0."""
    if modes.shape[0] == 0 or modes.shape[1] == 0:
        return modes.astype(np.complex128)
    # np.linalg.norm(modes, axis=0), the same ufunc calls without its dispatch.
    norms = np.sqrt(np.add.reduce((modes.conj() * modes).real, axis=0))
    unit = modes / np.where(norms > 0, norms, 1.0)
    ref_block = unit[reference_rows]
    anchor = ref_block[np.argmax(np.abs(ref_block), axis=0), np.arange(unit.shape[1])]
    fallback = unit[np.argmax(np.abs(unit), axis=0), np.arange(unit.shape[1])]
    anchor = np.where(np.abs(anchor) > 1e-12, anchor, fallback)
    phase = np.where(np.abs(anchor) > 0, anchor.conj() / np.maximum(np.abs(anchor), 1e-300), 1.0)
    return unit * phase


@dataclass(frozen=True)
class Signature:
    """Canonical, padded spectral signature: ``eigenvalues (r_max,)``, ``modes (r_max, q)``."""

    eigenvalues: np.ndarray
    modes: np.ndarray
    rank: int


def make_signature(
    eigenvalues: np.ndarray,
    amplitudes: np.ndarray,
    modes: np.ndarray,
    mode_rows: slice,
    reference_rows: slice,
    r_max: int,
) -> Signature:
    """Signature of a fit; ``mode_rows`` picks the mode coordinates kept (a few newest delays).

    Without mode coordinates, the last signature is reused while the eigenvalues (the
    same array) and their order stay (`_last_spectrum`): between scored ticks every
    forecast's query is made from one fit, and the order by amplitude rarely changes from
    one step to the next; the same signature object also finds its key coordinates kept
    (`recall.signature_row`).
    """
    held = _spectrum_of(np.asarray(eigenvalues))
    order = _order(held.groups, amplitudes)[:r_max]
    n_rows = len(range(*mode_rows.indices(modes.shape[0])))
    key = (order.tobytes(), r_max)
    reusable = n_rows == 0 and held.eigenvalues is eigenvalues
    if reusable and held.signature is not None and held.signature[0] == key:
        return held.signature[1]  # the same values (signatures are never changed once made)
    rank = int(order.shape[0])
    padded_eigs = np.zeros(r_max, dtype=np.complex128)
    padded_eigs[:rank] = eigenvalues[order]
    padded_modes = np.zeros((r_max, n_rows), dtype=np.complex128)
    if n_rows:  # (no mode coordinates kept: nothing to normalise)
        padded_modes[:rank] = normalize_modes(modes[mode_rows][:, order], reference_rows).T
    signature = Signature(eigenvalues=padded_eigs, modes=padded_modes, rank=rank)
    if reusable:
        held.signature = (key, signature)
    return signature


def eigenvalue_wasserstein(a: np.ndarray, b: np.ndarray) -> tuple[float, np.ndarray]:
    """2-Wasserstein distance between two equal-size eigenvalue sets, and the matching.

    Returns ``(W2, perm)`` where ``b[perm[i]]`` is matched to ``a[i]``.
    """
    cost = np.abs(a[:, None] - b[None, :]) ** 2
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty_like(cols)
    perm[rows] = cols
    return float(np.sqrt(cost[rows, cols].mean())), perm


def matched_mode_distance(modes_a: np.ndarray, modes_b: np.ndarray, perm: np.ndarray) -> float:
    """Root-mean-square distance between matched normalised modes (rows of each)."""
    diff = modes_a - modes_b[perm]
    return float(np.sqrt(np.mean(np.sum(np.abs(diff) ** 2, axis=1))))
