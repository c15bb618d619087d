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

#: The newest eigenvalue set's conjugate groups (`_conjugate_groups`): one fit in force
#: is queried at every tick until the next scored tick, with new amplitudes each time.
_last_groups: tuple[tuple[str, tuple[int, ...], bytes], tuple[_Group, ...]] | None = None


def _conjugate_groups(eigenvalues: np.ndarray) -> tuple[_Group, ...]:
    """The modes of `canonical_order` in groups, and each group's tie-break key.

    A group is a real eigenvalue, a conjugate pair (positive frequency first) or an
    unpaired one. The grouping is a function of the eigenvalues alone, so the last
    set's is kept: a pure function, whatever was called before.
    """
    global _last_groups
    key = (eigenvalues.dtype.str, eigenvalues.shape, eigenvalues.tobytes())
    cached = _last_groups
    if cached is not None and cached[0] == key:
        return cached[1]
    lams = eigenvalues.tolist()
    is_real = [abs(z.imag) <= _REAL_TOL * max(abs(z), 1e-300) for z in lams]
    unmatched = [j for j, z in enumerate(lams) if not is_real[j] and z.imag <= 0]
    groups: list[_Group] = []
    for i, z in enumerate(lams):
        if is_real[i]:
            groups.append(((i,), 0.0))
        elif z.imag > 0:
            # Eigenvalues of a real matrix: the partner is the conjugate (LAPACK puts it next).
            if unmatched:
                # LAPACK gives exact conjugates: the first exact one is the nearest
                # (distance 0, and `min` keeps the first), found without the abs() scan;
                # LAPACK puts it next, so it is most often the first unmatched one.
                partner = z.conjugate()
                if lams[unmatched[0]] == partner:
                    j = unmatched[0]
                else:
                    j = next((k for k in unmatched if lams[k] == partner), -1)
                    if j < 0:
                        j = min(unmatched, key=lambda k: abs(lams[k] - partner))
                unmatched.remove(j)
                groups.append(((i, j), -z.imag))
            else:
                groups.append(((i,), -z.imag))
    groups.extend(((j,), lams[j].imag) for j in unmatched)
    frozen = tuple(groups)
    _last_groups = (key, frozen)
    return frozen


#: Groups sort by strength, then by their tie-break key (their members never compared).
_strength_then_tie = operator.itemgetter(0, 1)


def canonical_order(eigenvalues: np.ndarray, amplitudes: np.ndarray) -> np.ndarray:
    """Indices ordering modes by amplitude, each conjugate pair adjacent (+freq first).

    Ordering by amplitude rather than frequency keeps the leading entries stable
    when the rank changes by a few weak noise modes. Ties (equal amplitudes up to
    rounding) go to the higher frequency. Plain Python: there are at most a few
    dozen eigenvalues, and NumPy's per-call overhead would dominate.
    """
    mags = np.abs(amplitudes).tolist()
    groups = []
    for members, tie in _conjugate_groups(np.asarray(eigenvalues)):
        if len(members) == 1:
            strength = mags[members[0]]
        else:
            strength = max(mags[members[0]], mags[members[1]])
        groups.append((-round(strength, 12), tie, members))
    groups.sort(key=_strength_then_tie)
    order: list[int] = []
    for group in groups:
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
    """Signature of a fit; ``mode_rows`` picks the mode coordinates kept (a few newest delays)."""
    global _last_signature
    order = canonical_order(eigenvalues, amplitudes)[:r_max]
    n_rows = len(range(*mode_rows.indices(modes.shape[0])))
    key = (order.tobytes(), r_max)
    cached = _last_signature
    if n_rows == 0 and cached is not None and cached[0] is eigenvalues and cached[1] == key:
        return cached[2]  # the same values (signatures are never changed once made)
    rank = int(order.shape[0])
    padded_eigs = np.zeros(r_max, dtype=np.complex128)
    padded_eigs[:rank] = eigenvalues[order]
    padded_modes = np.zeros((r_max, n_rows), dtype=np.complex128)
    if n_rows:  # (no mode coordinates kept: nothing to normalise)
        padded_modes[:rank] = normalize_modes(modes[mode_rows][:, order], reference_rows).T
    signature = Signature(eigenvalues=padded_eigs, modes=padded_modes, rank=rank)
    if n_rows == 0:
        _last_signature = (eigenvalues, key, signature)
    return signature


#: The last signature made without mode coordinates, with the eigenvalues (the fit's own
#: array, compared by identity: a fit's arrays are never changed) and canonical order it
#: was made of. Between scored ticks every forecast's query is made from one fit, and the
#: order by amplitude rarely changes from one step to the next; the same signature object
#: also finds its key coordinates kept (`recall.signature_row`).
_last_signature: tuple[np.ndarray, tuple[bytes, int], Signature] | None = None


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
