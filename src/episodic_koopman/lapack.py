"""NumPy's ``eigh``, ``eig``, ``inv`` and ``solve`` without their Python wrappers.

The fit runs at every scored step and every forecast after a new observation, on
matrices of a few dozen rows, where NumPy's wrappers cost as much as a third of
the LAPACK work. These call the same LAPACK gufuncs NumPy's wrappers call, and
return the same floats (the wrappers' post-processing is repeated exactly).
"""

from __future__ import annotations

import numpy as np
from numpy.linalg import _umath_linalg

_LAPACK_ERRORS = {"invalid": "call", "over": "ignore", "divide": "ignore", "under": "ignore"}


def _eigen_error(err: object, flag: object) -> None:
    raise np.linalg.LinAlgError("eigenvalue computation did not converge")


def symmetric_eigh(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.linalg.eigh(a)`` of a finite real symmetric matrix (lower triangle read)."""
    with np.errstate(call=_eigen_error, **_LAPACK_ERRORS):  # type: ignore[arg-type]
        return _umath_linalg.eigh_lo(a, signature="d->dd")


def complex_eig(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.linalg.eig(a)`` of a real matrix, as complex arrays (as `reduced_fit` stores them)."""
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


def real_solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.linalg.solve(a, b)`` of stacked real ``(..., M, M)`` and ``(..., M, K)``: the same
    LAPACK gufunc and error handling, without the wrapper (a tenth of the AR's block)."""
    with np.errstate(call=_singular_error, **_LAPACK_ERRORS):  # type: ignore[arg-type]
        return _umath_linalg.solve(a, b, signature="dd->d")
