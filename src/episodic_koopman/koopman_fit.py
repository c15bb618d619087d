"""`KoopmanFit`: a rank-``r`` DMD fit, its eigendecomposition and how it forecasts.

A fit is taken by `episodic_koopman.operator` (the windowed DMD, or the reference
`batch_dmd`). It propagates a state modally, ``modes diag(lambda)^h b``, with
unstable eigenvalues pulled onto the unit circle, or, when near-defective, by
powers of the Schur-stabilised operator; `fit_arrays` is the form a saved fit takes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg as sla

from .eigenvalue_powers import Stabilize, eigenvalue_powers, stabilize_eigenvalues
from .jit import kernel
from .lapack import complex_eig, complex_inv

#: Every row of a snapshot (`KoopmanFit._line`).
_ALL = slice(None)

#: Above this condition number of the eigenvector matrix, forecasts switch from
#: modal propagation to powers of a Schur-stabilised operator. Near-defective
#: pairs (a trend gives a Jordan block at 1) split into eigenvalues just inside
#: and just outside the circle; clipping only one of them modally breaks the
#: cancellation that makes the ramp, so such fits must not go through modes.
MODAL_CONDITION_LIMIT = 1e4


@kernel
def _largest_column_sum(magnitudes: np.ndarray) -> float:
    """``np.add.reduce(magnitudes, axis=0).max(initial=0)`` of a 2-D array: each column
    summed row after row, as that reduction sums them, and a nan wins as in ``max``."""
    largest = 0.0
    for j in range(magnitudes.shape[1]):
        total = 0.0
        for i in range(magnitudes.shape[0]):
            total += magnitudes[i, j]
        if total != total or largest != largest:
            largest = np.nan
        elif total > largest:
            largest = total
    return largest


@kernel
def _norm_1_product(a_magnitudes: np.ndarray, b_magnitudes: np.ndarray) -> float:
    """``np.linalg.norm(a, 1) * np.linalg.norm(b, 1)`` from ``np.abs`` of each (2-D)."""
    return _largest_column_sum(a_magnitudes) * _largest_column_sum(b_magnitudes)


class _cached:
    """`functools.cached_property` without its lock (Python 3.11 takes one on every first
    read: four per fit). A fit is built and read by one thread; a race would only compute
    the same value twice."""

    def __init__(self, method: Callable[[Any], Any]) -> None:
        self.method = method
        self.name = method.__name__
        self.__doc__ = method.__doc__

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        value = self.method(instance)
        instance.__dict__[self.name] = value  # shadows this (non-data) descriptor from now on
        return value


@dataclass(frozen=True, eq=False)
class KoopmanFit:
    """A rank-``r`` DMD fit in the POD basis of its window.

    ``basis`` (``m x r``, orthonormal) and ``sigma`` come from the window's
    snapshots; ``reduced`` is the ``r x r`` operator; ``eigenvalues`` and
    ``eigenvectors`` are its eigendecomposition; ``modes = basis @ eigenvectors``
    are the (projected) DMD modes, each of unit norm.
    """

    basis: np.ndarray
    sigma: np.ndarray
    reduced: np.ndarray
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    inverse_eigenvectors: np.ndarray
    n_pairs: int
    #: A fit of a detrended window (`WindowedDMD` with ``detrend``): ``(2, m)``, each
    #: observable's least-squares line over the window, its value at the newest snapshot
    #: (row 0) and its slope per step (row 1); ``trend_index`` is that snapshot's index.
    #: The operator evolves the deviations from the line; forecasts add the line back.
    trend: np.ndarray | None = None
    trend_index: int = 0

    @property
    def rank(self) -> int:
        return int(self.sigma.shape[0])

    @_cached
    def modes(self) -> np.ndarray:
        # Cached (read-only): a fit serves its query, its spectrum and its episodes.
        modes = self.basis @ self.eigenvectors
        modes.flags.writeable = False
        return modes

    def deviation(self, psi: np.ndarray, index: int) -> np.ndarray:
        """Snapshot ``psi`` (of snapshot ``index``) less the trend line, if the fit has one."""
        if self.trend is None:
            return psi
        return psi - self._line(float(index - self.trend_index))

    def _line(self, offsets: float | np.ndarray, rows: slice | np.ndarray = _ALL) -> np.ndarray:
        """The trend line's ``rows`` at ``offsets`` snapshots after `trend_index` (a float,
        or an array broadcast against the rows: ``(..., 1)``)."""
        assert self.trend is not None
        return self.trend[0][rows] + offsets * self.trend[1][rows]

    def _with_line(
        self, paths: np.ndarray, offsets: float | np.ndarray, steps: int, rows: slice | np.ndarray
    ) -> np.ndarray:
        """``paths`` (``(..., steps, n_rows)``, propagated deviations from the line, of states
        ``offsets`` snapshots after `trend_index`: a float or ``(B, 1)``) plus the line's
        continuation: the forecast of a detrended fit."""
        ahead = offsets + np.arange(1, steps + 1, dtype=np.float64)  # (steps,) or (B, steps)
        return paths + self._line(ahead[..., None], rows)

    def amplitudes(self, psi: np.ndarray) -> np.ndarray:
        """Modal amplitudes ``b`` with ``psi ~ modes @ b``.

        For a near-defective fit (see `MODAL_CONDITION_LIMIT`) the exact amplitudes
        are huge and cancel (``+-5e4`` on a ramp), which says nothing about how strong
        each mode is, yet signatures are ordered by them. Those fits get the
        minimum-norm least-squares amplitudes, with singular values of the eigenvector
        matrix below ``1 / MODAL_CONDITION_LIMIT`` of the largest treated as zero.
        """
        projected = self.basis.T @ psi
        if self.modal_condition < MODAL_CONDITION_LIMIT:
            return self.inverse_eigenvectors @ projected
        return np.linalg.lstsq(
            self.eigenvectors, projected.astype(np.complex128), rcond=1.0 / MODAL_CONDITION_LIMIT
        )[0]

    def amplitudes_at(self, psi: np.ndarray) -> np.ndarray:
        """`amplitudes` (read-only), the last state's kept: a scored tick's query and its
        plain forecast start from the same snapshot, and so do a forecast's between them."""
        key = psi.tobytes()
        held = self.__dict__.get("_last_amplitudes")  # (as `_cached` keeps its values)
        if held is not None and held[0] == key:
            return held[1]
        b = self.amplitudes(psi)
        b.flags.writeable = False
        self.__dict__["_last_amplitudes"] = (key, b)
        return b

    @_cached
    def modal_condition(self) -> float:
        """1-norm condition number of the eigenvector matrix (inf when singular)."""
        if self.rank == 0:
            return 1.0
        return float(_norm_1_product(np.abs(self.eigenvectors), np.abs(self.inverse_eigenvectors)))

    @_cached
    def _readout_cache(self) -> dict[tuple[int, int], np.ndarray]:
        return {}

    @_cached
    def _powers_cache(self) -> dict[tuple[int, str], np.ndarray]:
        return {}

    def _powers(self, steps: int, stabilize: Stabilize) -> np.ndarray:
        """``lambda^h`` for ``h = 1..steps`` (stabilised), cached: fits serve many forecasts."""
        key = (steps, stabilize)
        powers = self._powers_cache.get(key)
        if powers is None:
            powers = self._powers_cache[key] = eigenvalue_powers(self.eigenvalues, steps, stabilize)
        return powers

    def _modal_readout(self, rows: slice) -> np.ndarray:
        key = (rows.start, rows.stop)
        if key not in self._readout_cache:
            self._readout_cache[key] = self.basis[rows] @ self.eigenvectors
        return self._readout_cache[key]

    def propagate(
        self,
        psi: np.ndarray,
        steps: int,
        rows: slice | np.ndarray,
        stabilize: Stabilize = "clip",
        index: int | None = None,
    ) -> np.ndarray:
        """Observables ``rows`` at steps ``1..steps`` ahead of state ``psi``: ``(steps, n_rows)``.

        Propagation is modal, ``modes diag(lambda)^h b``, with unstable eigenvalues
        stabilised first. When the eigenvectors are near-defective (a trend makes a
        Jordan block at 1), modal propagation loses accuracy, so the forecast then
        iterates the reduced operator with its eigenvalues stabilised in Schur form.
        A fit with a ``trend`` needs the snapshot ``index`` of ``psi``: the deviation
        from the line is propagated and the line's continuation added.
        """
        if self.trend is None:
            return self._propagate(psi, steps, rows, stabilize)
        if index is None:
            raise ValueError("a detrended fit propagates from a state of known index")
        offset = float(index - self.trend_index)
        path = self._propagate(psi - self._line(offset), steps, rows, stabilize)
        return self._with_line(path, offset, steps, rows)

    def _propagate(
        self, psi: np.ndarray, steps: int, rows: slice | np.ndarray, stabilize: Stabilize
    ) -> np.ndarray:
        if self.rank == 0:
            return np.zeros((steps, self.basis[rows].shape[0]))
        if self.modal_condition < MODAL_CONDITION_LIMIT:
            b = self.amplitudes_at(psi)
            readout = (
                self._modal_readout(rows)
                if isinstance(rows, slice)
                else (self.basis[rows] @ self.eigenvectors)
            )
            return ((self._powers(steps, stabilize) * b) @ readout.T).real
        operator = self.reduced
        if stabilize == "clip":
            schur, unitary = sla.schur(self.reduced.astype(np.complex128), output="complex")
            diagonal = np.diag(schur)
            schur[np.diag_indices_from(schur)] = stabilize_eigenvalues(diagonal, "clip")
            operator = (unitary @ schur @ unitary.conj().T).real
        z = self.basis.T @ psi
        out = np.empty((steps, self.basis[rows].shape[0]))
        readout_basis = self.basis[rows]
        for h in range(steps):
            z = operator @ z
            out[h] = readout_basis @ z
        return out


#: The arrays that make a `KoopmanFit` (with ``n_pairs``): what a saved fit holds.
FIT_FIELDS = ("basis", "sigma", "reduced", "eigenvalues", "eigenvectors", "inverse_eigenvectors")


def fit_arrays(fit: KoopmanFit) -> dict[str, np.ndarray]:
    """A fit as named arrays (`fit_from_arrays` restores it exactly)."""
    arrays = {name: getattr(fit, name) for name in FIT_FIELDS}
    arrays["n_pairs"] = np.array(fit.n_pairs, dtype=np.int64)
    if fit.trend is not None:
        arrays["trend"] = fit.trend
        arrays["trend_index"] = np.array(fit.trend_index, dtype=np.int64)
    return arrays


def fit_from_arrays(arrays: dict[str, np.ndarray]) -> KoopmanFit:
    """Inverse of `fit_arrays`: the same floats, so the same forecasts."""
    trend = np.array(arrays["trend"]) if "trend" in arrays else None
    return KoopmanFit(
        **{name: np.array(arrays[name]) for name in FIT_FIELDS},
        n_pairs=int(arrays["n_pairs"]),
        trend=trend,
        trend_index=int(arrays["trend_index"]) if trend is not None else 0,
    )


def propagate_many(
    fit: KoopmanFit,
    psis: np.ndarray,
    steps: int,
    rows: slice,
    stabilize: Stabilize = "clip",
    indices: np.ndarray | None = None,
) -> np.ndarray:
    """`KoopmanFit.propagate` for many starting states ``(B, m)``: ``(B, steps, n_rows)``
    (a detrended fit needs their snapshot ``indices``)."""
    if fit.trend is not None:
        if indices is None:
            raise ValueError("a detrended fit propagates from states of known index")
        offsets = (np.asarray(indices, dtype=np.int64) - fit.trend_index).astype(np.float64)
        offsets = offsets[:, None]
        paths = _propagate_many(fit, psis - fit._line(offsets), steps, rows, stabilize)
        return fit._with_line(paths, offsets, steps, rows)
    return _propagate_many(fit, psis, steps, rows, stabilize)


def _propagate_many(
    fit: KoopmanFit, psis: np.ndarray, steps: int, rows: slice, stabilize: Stabilize
) -> np.ndarray:
    """`propagate_many` of the operator alone (a trend, if any, is the caller's)."""
    if fit.rank == 0:
        return np.zeros((psis.shape[0], steps, fit.basis[rows].shape[0]))
    if fit.modal_condition < MODAL_CONDITION_LIMIT:
        # einsum (not BLAS) reduces every output element in a fixed order, so each row is
        # the same whatever else is in the batch: how episodes are batched leaves no trace.
        projected = np.einsum("mr,bm->br", fit.basis, psis)
        amplitudes = np.einsum("rs,bs->br", fit.inverse_eigenvectors, projected)
        powers = fit._powers(steps, stabilize)
        return np.einsum("hr,br,cr->bhc", powers, amplitudes, fit._modal_readout(rows)).real
    return np.stack([fit._propagate(psi, steps, rows, stabilize) for psi in psis])


def reduced_fit(
    basis: np.ndarray,
    sigma: np.ndarray,
    reduced: np.ndarray,
    n_pairs: int,
    trend: np.ndarray | None = None,
    trend_index: int = 0,
) -> KoopmanFit:
    """The fit of the reduced operator ``reduced`` in the POD basis ``basis`` (singular values
    ``sigma``), with its eigendecomposition."""
    eigenvalues, eigenvectors = complex_eig(reduced)
    try:
        inverse = complex_inv(eigenvectors)
    except np.linalg.LinAlgError:
        inverse = np.full_like(eigenvectors, np.inf)  # defective: propagate() avoids modes
    return KoopmanFit(
        basis=basis,
        sigma=sigma,
        reduced=reduced,
        eigenvalues=eigenvalues,
        eigenvectors=eigenvectors,
        inverse_eigenvectors=inverse,
        n_pairs=n_pairs,
        trend=trend,
        trend_index=trend_index,
    )
