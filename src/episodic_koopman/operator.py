"""The local linear operator: sliding-window DMD, updated in O(m^2) per snapshot.

For snapshot pairs ``X = [x_1 .. x_w]``, ``Y = [x_2 .. x_{w+1}]`` (``m``
observables each), truncated DMD takes the SVD ``X = U S V^T`` and the reduced
operator ``A_r = U_r^T Y V_r S_r^{-1}``. Substituting ``V_r = X^T U_r S_r^{-1}``
gives the identity this module is built on::

    A_r = U_r^T (Y X^T) U_r S_r^{-2},    U_r, S_r^2 from eigh(X X^T).

So the fit needs only the two ``m x m`` Gram matrices ``G = X X^T`` and
``C = Y X^T``. Sliding the window by one snapshot adds one pair and drops the
oldest: two rank-1 updates of each (BLAS ``dger``, about ``8 m^2`` flops), never
an SVD of the ``m x w`` window. This is the windowed online DMD of Zhang et al.
(2019) with the inverse Gram replaced by the Gram itself, which stays well
defined when the data are rank-deficient (a noiseless sum of sinusoids). The
eigendecomposition is taken only when a forecast or an episode asks for it
(`WindowedDMD.fit`, cached until the next update), and `WindowedDMD.refit`
recomputes the Gram matrices exactly to bound rounding drift.

>>> import numpy as np
>>> t = np.arange(200)
>>> y = np.sin(0.2 * t)
>>> X = np.stack([y[k : k + 8] for k in range(150)])
>>> dmd = WindowedDMD(n_features=8, window=100, rank=2)
>>> for x in X:
...     dmd.push(x)
>>> fit = dmd.fit()
>>> np.round(np.sort(np.abs(np.angle(fit.eigenvalues))), 6)
array([0.2, 0.2])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.linalg as sla
from numpy.linalg import _umath_linalg
from scipy.linalg.blas import dger

from .rank import RankRule, drift_rtol, select_rank, validate_rank_rule

Stabilize = Literal["clip", "none"]

#: Above this condition number of the eigenvector matrix, forecasts switch from
#: modal propagation to powers of a Schur-stabilised operator. Near-defective
#: pairs (a trend gives a Jordan block at 1) split into eigenvalues just inside
#: and just outside the circle; clipping only one of them modally breaks the
#: cancellation that makes the ramp, so such fits must not go through modes.
MODAL_CONDITION_LIMIT = 1e4


def _matrix_norm_1(a: np.ndarray) -> np.floating:
    """``np.linalg.norm(a, 1)`` of a 2-D array: the same ufunc calls, without the dispatch."""
    return np.add.reduce(np.abs(a), axis=0).max(axis=0, initial=0)


def stabilize_eigenvalues(eigenvalues: np.ndarray, mode: Stabilize) -> np.ndarray:
    """Pull eigenvalues outside the unit circle onto it (``"clip"``), or leave them."""
    if mode == "none":
        return eigenvalues
    magnitude = np.abs(eigenvalues)
    return np.where(magnitude > 1.0, eigenvalues / np.maximum(magnitude, 1e-300), eigenvalues)


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

    @property
    def rank(self) -> int:
        return int(self.sigma.shape[0])

    @_cached
    def modes(self) -> np.ndarray:
        # Cached (read-only): a fit serves its query, its spectrum and its episodes.
        modes = self.basis @ self.eigenvectors
        modes.flags.writeable = False
        return modes

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
        return float(_matrix_norm_1(self.eigenvectors) * _matrix_norm_1(self.inverse_eigenvectors))

    @_cached
    def _readout_cache(self) -> dict[tuple[int, int], np.ndarray]:
        return {}

    @_cached
    def _powers_cache(self) -> dict[tuple[int, str], np.ndarray]:
        return {}

    def _powers(self, steps: int, stabilize: Stabilize) -> np.ndarray:
        """``lambda^h`` for ``h = 1..steps`` (stabilised), cached: fits serve many forecasts."""
        key = (steps, stabilize)
        if key not in self._powers_cache:
            lam = stabilize_eigenvalues(self.eigenvalues, stabilize)
            self._powers_cache[key] = lam[None, :] ** np.arange(1, steps + 1)[:, None]
        return self._powers_cache[key]

    def _modal_readout(self, rows: slice) -> np.ndarray:
        key = (rows.start, rows.stop)
        if key not in self._readout_cache:
            self._readout_cache[key] = self.basis[rows] @ self.eigenvectors
        return self._readout_cache[key]

    def propagate(
        self, psi: np.ndarray, steps: int, rows: slice | np.ndarray, stabilize: Stabilize = "clip"
    ) -> np.ndarray:
        """Observables ``rows`` at steps ``1..steps`` ahead of state ``psi``: ``(steps, n_rows)``.

        Propagation is modal, ``modes diag(lambda)^h b``, with unstable eigenvalues
        stabilised first. When the eigenvectors are near-defective (a trend makes a
        Jordan block at 1), modal propagation loses accuracy, so the forecast then
        iterates the reduced operator with its eigenvalues stabilised in Schur form.
        """
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
    return arrays


def fit_from_arrays(arrays: dict[str, np.ndarray]) -> KoopmanFit:
    """Inverse of `fit_arrays`: the same floats, so the same forecasts."""
    return KoopmanFit(
        **{name: np.array(arrays[name]) for name in FIT_FIELDS}, n_pairs=int(arrays["n_pairs"])
    )


def propagate_many(
    fit: KoopmanFit, psis: np.ndarray, steps: int, rows: slice, stabilize: Stabilize = "clip"
) -> np.ndarray:
    """`KoopmanFit.propagate` for many starting states ``(B, m)``: ``(B, steps, n_rows)``."""
    if fit.rank == 0:
        return np.zeros((psis.shape[0], steps, fit.basis[rows].shape[0]))
    if fit.modal_condition < MODAL_CONDITION_LIMIT:
        # einsum (not BLAS) reduces every output element in a fixed order, so each row is
        # the same whatever else is in the batch: how episodes are batched leaves no trace.
        projected = np.einsum("mr,bm->br", fit.basis, psis)
        amplitudes = np.einsum("rs,bs->br", fit.inverse_eigenvectors, projected)
        powers = fit._powers(steps, stabilize)
        return np.einsum("hr,br,cr->bhc", powers, amplitudes, fit._modal_readout(rows)).real
    return np.stack([fit.propagate(psi, steps, rows, stabilize) for psi in psis])


# The fit runs at every scored step and every forecast after a new observation, on
# matrices of a few dozen rows, where NumPy's wrappers of eigh and eig cost as much as
# a third of the LAPACK work. These call the same LAPACK gufuncs NumPy's wrappers call,
# and return the same floats (the wrappers' post-processing is repeated exactly).
_LAPACK_ERRORS = {"invalid": "call", "over": "ignore", "divide": "ignore", "under": "ignore"}


def _eigen_error(err: object, flag: object) -> None:
    raise np.linalg.LinAlgError("eigenvalue computation did not converge")


def symmetric_eigh(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.linalg.eigh(a)`` of a finite real symmetric matrix (lower triangle read)."""
    with np.errstate(call=_eigen_error, **_LAPACK_ERRORS):  # type: ignore[arg-type]
        return _umath_linalg.eigh_lo(a, signature="d->dd")


def complex_eig(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.linalg.eig(a)`` of a real matrix, as complex arrays (as `_reduced_fit` stores them)."""
    if not np.isfinite(a).all():
        return np.linalg.eig(a)  # raises NumPy's own error
    with np.errstate(call=_eigen_error, **_LAPACK_ERRORS):  # type: ignore[arg-type]
        w, v = _umath_linalg.eig(a, signature="d->DD")
    if (w.imag == 0.0).all():
        # np.linalg.eig returns real arrays here; converting back to complex sets every
        # imaginary part to +0.0, as the stored fit always had.
        return w.real.astype(np.complex128), v.real.astype(np.complex128)
    return w, v


def _singular_error(err: object, flag: object) -> None:
    raise np.linalg.LinAlgError("Singular matrix")


def complex_inv(a: np.ndarray) -> np.ndarray:
    """``np.linalg.inv(a)`` of a complex matrix: the same LAPACK gufunc, without the wrapper."""
    with np.errstate(call=_singular_error, **_LAPACK_ERRORS):  # type: ignore[arg-type]
        return _umath_linalg.inv(a, signature="D->D")


def _reduced_fit(
    basis: np.ndarray, sigma: np.ndarray, reduced: np.ndarray, n_pairs: int
) -> KoopmanFit:
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
    )


def batch_dmd(
    X: np.ndarray, Y: np.ndarray, rank: RankRule, max_rank: int | None = None
) -> KoopmanFit:
    """Reference truncated DMD by SVD of the snapshot matrix ``X`` (``m x w``).

    This is what `WindowedDMD` avoids on every step; tests and benchmarks use it
    as the exact baseline.
    """
    U, s, Vt = np.linalg.svd(X, full_matrices=False)
    r = select_rank(s, X.shape[0], X.shape[1], rank, max_rank)
    basis = U[:, :r]
    reduced = (basis.T @ Y @ Vt[:r].T) / s[:r]
    return _reduced_fit(basis, s[:r], reduced, X.shape[1])


class WindowedDMD:
    """DMD on the last ``window`` snapshot pairs, maintained by rank-1 Gram updates.

    Snapshots are pushed one at a time; consecutive snapshots form the pairs
    ``(x_k, x_{k+1})``. Until ``window`` pairs have arrived the window grows;
    after that each push adds the newest pair and removes the oldest.
    ``refit_every`` (pushes between exact `refit` calls, if scheduled) bounds the
    rounding drift of the Gram matrices, and with it the numerical rank floor;
    without it the drift is bounded by every push so far.
    """

    def __init__(
        self,
        n_features: int,
        window: int,
        rank: RankRule = "gd",
        max_rank: int | None = None,
        refit_every: int | None = None,
    ) -> None:
        validate_rank_rule(rank)
        self.n_features = n_features
        self.window = window
        self.rank = rank
        self.max_rank = max_rank
        self.refit_every = refit_every
        self._ring = np.zeros((window + 1, n_features))
        self._count = 0
        self._gram = np.zeros((n_features, n_features), order="F")
        self._cross = np.zeros((n_features, n_features), order="F")
        self._fit: KoopmanFit | None = None

    @property
    def n_snapshots(self) -> int:
        return min(self._count, self.window + 1)

    @property
    def n_pairs(self) -> int:
        return max(self.n_snapshots - 1, 0)

    @property
    def n_pushed(self) -> int:
        return self._count

    def _slot(self, k: int) -> int:
        return k % (self.window + 1)

    def newest(self) -> np.ndarray:
        """The most recent snapshot (the state forecasts start from)."""
        return self._ring[self._slot(self._count - 1)]

    def snapshots(self) -> np.ndarray:
        """The window's snapshots, oldest first: ``(n_snapshots, m)``."""
        first = self._count - self.n_snapshots
        return self._ring[np.arange(first, self._count) % (self.window + 1)]

    def push(self, psi: np.ndarray) -> None:
        """Add one snapshot (and the pair it closes), sliding the window if full."""
        if self._count > self.window:
            oldest = self._count - self.window - 1
            x_old = self._ring[self._slot(oldest)].copy()
            y_old = self._ring[self._slot(oldest + 1)]
            dger(-1.0, x_old, x_old, a=self._gram, overwrite_a=True)
            dger(-1.0, y_old, x_old, a=self._cross, overwrite_a=True)
        if self._count > 0:
            x_new = self._ring[self._slot(self._count - 1)]
            dger(1.0, x_new, x_new, a=self._gram, overwrite_a=True)
            dger(1.0, psi, x_new, a=self._cross, overwrite_a=True)
        self._ring[self._slot(self._count)] = psi
        self._count += 1
        self._fit = None

    def refit(self) -> None:
        """Recompute the Gram matrices exactly from the window (bounds rounding drift)."""
        snaps = self.snapshots()
        X, Y = snaps[:-1], snaps[1:]
        self._gram = np.asfortranarray(X.T @ X)
        self._cross = np.asfortranarray(Y.T @ X)
        self._fit = None

    def replace_snapshots(self, snapshots: np.ndarray) -> None:
        """Swap the window's snapshots for re-standardised ones and refit exactly."""
        first = self._count - self.n_snapshots
        for k, psi in zip(range(first, self._count), snapshots, strict=True):
            self._ring[self._slot(k)] = psi
        self.refit()

    def fit(self) -> KoopmanFit | None:
        """The truncated DMD of the current window (``None`` before two pairs)."""
        if self._fit is not None:
            return self._fit
        if self.n_pairs < 2:
            return None
        lam, vectors = symmetric_eigh(self._gram)
        lam, vectors = lam[::-1], vectors[:, ::-1]
        sigma = np.sqrt(np.maximum(lam, 0.0))  # np.clip(lam, 0.0, None) calls just this
        # Two rank-1 updates of G per push since the last exact refit, at most.
        pushes = self.refit_every if self.refit_every is not None else self._count
        rtol = drift_rtol(2 * pushes, self.n_pairs)
        r = select_rank(sigma, self.n_features, self.n_pairs, self.rank, self.max_rank, rtol)
        basis = np.ascontiguousarray(vectors[:, :r])
        reduced = (basis.T @ self._cross @ basis) / lam[:r]
        self._fit = _reduced_fit(basis, sigma[:r], reduced, self.n_pairs)
        return self._fit

    def gram_matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """``(X X^T, Y X^T)`` as maintained incrementally (for tests)."""
        return self._gram.copy(), self._cross.copy()

    def get_state(self) -> dict[str, np.ndarray]:
        return {
            "ring": self._ring.copy(),
            "count": np.array(self._count, dtype=np.int64),
            "gram": self._gram.copy(),
            "cross": self._cross.copy(),
        }

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self._ring = np.array(state["ring"], dtype=np.float64)
        self._count = int(state["count"])
        self._gram = np.asfortranarray(state["gram"], dtype=np.float64)
        self._cross = np.asfortranarray(state["cross"], dtype=np.float64)
        self._fit = None
