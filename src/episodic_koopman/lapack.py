"""NumPy's ``eigh``, ``eig``, ``inv`` and ``solve`` without their Python wrappers.

The fit runs at every scored step and every forecast after a new observation, on
matrices of a few dozen rows, where NumPy's wrappers cost as much as a third of
the LAPACK work. These call the same LAPACK gufuncs NumPy's wrappers call, and
return the same floats (the wrappers' post-processing is repeated exactly).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.linalg import _umath_linalg

from .jit import kernel

_LAPACK_ERRORS = {"invalid": "call", "over": "ignore", "divide": "ignore", "under": "ignore"}

try:  # NumPy >= 2: the error state is a context variable holding one object
    from numpy._core._ufunc_config import (  # type: ignore[attr-defined]
        _extobj_contextvar,
        _make_extobj,
    )

    _make_extobj(call=None, **_LAPACK_ERRORS)  # a private API: check it still takes these
except Exception:  # pragma: no cover - older or changed NumPy: np.errstate itself
    _extobj_contextvar = _make_extobj = None


class _ErrorState:
    """``np.errstate(call=handler, **_LAPACK_ERRORS)``, its state object made once.

    Every fit takes three of these and every block of the AR experts one per AR, and
    making the state object anew cost about as much as the small LAPACK call it guards.
    Entering sets NumPy's error-state context variable to it, as `np.errstate` does.
    """

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.made: Any = None

    def enter(self) -> Any:
        if _extobj_contextvar is None:  # pragma: no cover
            state = np.errstate(call=self.handler, **_LAPACK_ERRORS)  # type: ignore[arg-type]
            state.__enter__()
            return state
        if self.made is None:  # made from the defaults at first use (bufsize: NumPy's)
            self.made = _make_extobj(call=self.handler, **_LAPACK_ERRORS)
        return _extobj_contextvar.set(self.made)

    @staticmethod
    def leave(token: Any) -> None:
        if _extobj_contextvar is None:  # pragma: no cover
            token.__exit__(None, None, None)
        else:
            _extobj_contextvar.reset(token)


def _eigen_error(err: object, flag: object) -> None:
    raise np.linalg.LinAlgError("eigenvalue computation did not converge")


_EIGEN_ERRORS = _ErrorState(_eigen_error)


def symmetric_eigh(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.linalg.eigh(a)`` of a finite real symmetric matrix (lower triangle read)."""
    token = _EIGEN_ERRORS.enter()
    try:
        return _umath_linalg.eigh_lo(a, signature="d->dd")
    finally:
        _ErrorState.leave(token)


@kernel
def _all_finite(a: np.ndarray) -> bool:
    """``np.isfinite(a).all()`` of a 2-D array."""
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            if not np.isfinite(a[i, j]):
                return False
    return True


@kernel
def _all_real(parts: np.ndarray) -> bool:
    """``(z.imag == 0.0).all()`` of complex ``z`` given as ``(re, im)`` pairs."""
    for k in range(1, parts.shape[0], 2):
        if parts[k] != 0.0:
            return False
    return True


def complex_eig(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.linalg.eig(a)`` of a real matrix, as complex arrays (as `reduced_fit` stores them)."""
    plain = a.ndim == 2 and a.dtype == np.float64  # (what the fits pass)
    if not (_all_finite(a) if plain else np.isfinite(a).all()):
        return np.linalg.eig(a)  # raises NumPy's own error
    token = _EIGEN_ERRORS.enter()
    try:
        w, v = _umath_linalg.eig(a, signature="d->DD")
    finally:
        _ErrorState.leave(token)
    if _all_real(w.view(np.float64)):
        # np.linalg.eig returns real arrays here; converting back to complex sets every
        # imaginary part to +0.0, as the stored fit always had.
        return w.real.astype(np.complex128), v.real.astype(np.complex128)
    return w, v


def _singular_error(err: object, flag: object) -> None:
    raise np.linalg.LinAlgError("Singular matrix")


_SINGULAR_ERRORS = _ErrorState(_singular_error)


def complex_inv(a: np.ndarray) -> np.ndarray:
    """``np.linalg.inv(a)`` of a complex matrix: the same LAPACK gufunc, without the wrapper."""
    token = _SINGULAR_ERRORS.enter()
    try:
        return _umath_linalg.inv(a, signature="D->D")
    finally:
        _ErrorState.leave(token)


def real_solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.linalg.solve(a, b)`` of stacked real ``(..., M, M)`` and ``(..., M, K)``: the same
    LAPACK gufunc and error handling, without the wrapper (a tenth of the AR's block)."""
    token = _SINGULAR_ERRORS.enter()
    try:
        return _umath_linalg.solve(a, b, signature="dd->d")
    finally:
        _ErrorState.leave(token)
