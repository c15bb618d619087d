"""Powers of a fit's eigenvalues, stabilised: what a modal forecast multiplies by.

A modal forecast ``h`` steps ahead weighs each mode by ``lambda^h``, with unstable
eigenvalues first pulled onto the unit circle (``"clip"``). `eigenvalue_powers` makes
the table for ``h = 1..steps`` as NumPy's ``**`` makes it, float for float, in one
compiled loop instead of five NumPy calls.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from .jit import kernel

Stabilize = Literal["clip", "none"]


def stabilize_eigenvalues(eigenvalues: np.ndarray, mode: Stabilize) -> np.ndarray:
    """Pull eigenvalues outside the unit circle onto it (``"clip"``), or leave them."""
    if mode == "none":
        return eigenvalues
    magnitude = np.abs(eigenvalues)
    return np.where(magnitude > 1.0, eigenvalues / np.maximum(magnitude, 1e-300), eigenvalues)


#: Powers up to this step are `_eigenvalue_powers`'s; beyond it NumPy's ``**`` takes
#: another path (its general complex power), so NumPy's ``**`` makes them all.
_POWER_STEPS_LIMIT = 100


@kernel
def _eigenvalue_powers(
    parts: np.ndarray, magnitudes: np.ndarray, steps: int, clip: bool
) -> np.ndarray:
    """``stabilize_eigenvalues(lam, "clip" or "none")[None, :] ** arange(1, steps + 1)[:,
    None]`` as ``(re, im)`` pairs ``(steps, 2 r)``, for ``steps < _POWER_STEPS_LIMIT``;
    ``parts`` is ``lam`` as pairs, ``magnitudes`` is ``np.abs(lam)``.

    The same operations as NumPy's, one by one: its complex division by ``|lam| + 0j``
    (Smith's, with the ratio 0), and its integer power (``a``, ``a a``, ``a (a a)``,
    then binary powering from 1), products as ``(ac - bd, ad + bc)``.
    """
    r = parts.shape[0] // 2
    out = np.empty((steps, 2 * r))
    for j in range(r):
        ar, ai = parts[2 * j], parts[2 * j + 1]
        if clip and magnitudes[j] > 1.0:
            m = magnitudes[j]
            if 1e-300 > m:  # np.maximum(m, 1e-300), m > 1 (a nan is not)
                m = 1e-300
            ratio = 0.0 / m
            scale = 1.0 / (m + 0.0 * ratio)
            ar, ai = (ar + ai * ratio) * scale, (ai - ar * ratio) * scale
        for h in range(steps):
            n = h + 1
            if ar == 0.0 and ai == 0.0:
                pr, pi = 0.0, 0.0
            elif n == 1:
                pr, pi = ar, ai
            elif n == 2:
                pr, pi = ar * ar - ai * ai, ar * ai + ai * ar
            elif n == 3:
                sr, si = ar * ar - ai * ai, ar * ai + ai * ar
                pr, pi = ar * sr - ai * si, ar * si + ai * sr
            else:
                pr, pi = 1.0, 0.0
                br, bi = ar, ai
                mask = 1
                while True:
                    if n & mask:
                        pr, pi = pr * br - pi * bi, pr * bi + pi * br
                    mask <<= 1
                    if n < mask:
                        break
                    br, bi = br * br - bi * bi, br * bi + bi * br
            out[h, 2 * j] = pr
            out[h, 2 * j + 1] = pi
    return out


def eigenvalue_powers(eigenvalues: np.ndarray, steps: int, stabilize: Stabilize) -> np.ndarray:
    """``stabilize_eigenvalues(eigenvalues, stabilize)[None, :] ** arange(1, steps + 1)[:, None]``:
    ``(steps, r)`` complex."""
    if steps < _POWER_STEPS_LIMIT and eigenvalues.dtype == np.complex128:
        parts = np.ascontiguousarray(eigenvalues).view(np.float64)
        pairs = _eigenvalue_powers(parts, np.abs(eigenvalues), steps, stabilize == "clip")
        return pairs.view(np.complex128)
    lam = stabilize_eigenvalues(eigenvalues, stabilize)
    return lam[None, :] ** np.arange(1, steps + 1)[:, None]


__all__ = ["Stabilize", "eigenvalue_powers", "stabilize_eigenvalues"]
