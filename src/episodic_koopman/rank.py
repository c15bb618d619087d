"""The one rank-selection rule for truncating DMD.

A rank rule is one of:

* an ``int`` ``r >= 1``: keep the ``r`` leading singular values;
* a ``float`` in ``(0, 1]``: keep the fewest leading singular values whose
  energy (sum of squares) reaches that fraction of the total;
* ``"gd"``: the Gavish-Donoho optimal hard threshold for an unknown noise
  level, ``omega(beta) * median(sigma)`` (Gavish & Donoho 2014, eq. 5).

Whatever the rule, the rank is also capped by ``max_rank`` and by the numerical
rank: singular values below ``1e-6 * sigma_1`` are treated as zero, because the
operator obtains them from the eigenvalues of a Gram matrix, which squares the
condition number.

>>> import numpy as np
>>> sigma = np.array([10.0, 5.0, 0.1, 0.09, 0.08, 0.07])
>>> select_rank(sigma, n_rows=6, n_cols=40, rule=2)
2
>>> select_rank(sigma, n_rows=6, n_cols=40, rule=0.99)
2
>>> select_rank(sigma, n_rows=6, n_cols=40, rule="gd")
2
"""

from __future__ import annotations

import math
from typing import Literal, TypeAlias

import numpy as np

from .jit import kernel

RankRule: TypeAlias = int | float | Literal["gd"]

#: Singular values below this fraction of the largest are numerically zero.
NUMERICAL_RTOL = 1e-6


def validate_rank_rule(rule: object) -> None:
    """Raise ``ValueError``/``TypeError`` unless ``rule`` is a valid rank rule."""
    if isinstance(rule, bool):
        raise TypeError(f"rank must be an int, a float in (0, 1] or 'gd', got {rule!r}")
    if isinstance(rule, int | np.integer):
        if rule < 1:
            raise ValueError(f"rank must be >= 1 when an integer, got {rule}")
        return
    if isinstance(rule, float | np.floating):
        if not (0.0 < float(rule) <= 1.0) or math.isnan(rule):
            raise ValueError(f"rank as an energy fraction must lie in (0, 1], got {rule}")
        return
    if rule == "gd":
        return
    raise TypeError(f"rank must be an int, a float in (0, 1] or 'gd', got {rule!r}")


def gavish_donoho_omega(beta: float) -> float:
    """Approximate optimal threshold coefficient for unknown noise (aspect ratio ``beta``)."""
    return 0.56 * beta**3 - 0.95 * beta**2 + 1.82 * beta + 1.43


#: Safety factor of `drift_rtol`: rounding per update, and peaks of ``|x|^2`` over its mean.
DRIFT_SAFETY = 16.0


#: ``DRIFT_SAFETY * eps``, the first product of `drift_rtol` (one fit each, no `np.finfo` call).
_DRIFT_UNIT = DRIFT_SAFETY * float(np.finfo(np.float64).eps)


def drift_rtol(updates: int, n_pairs: int) -> float:
    """Relative floor for singular values from a Gram matrix after ``updates`` rank-1 updates.

    Each update ``G +/- x x^T`` rounds with an error of about ``eps |x|^2``, and
    ``trace(G) ~ n_pairs |x|^2 <= rank * sigma_1^2``, so after ``updates`` of
    them eigenvalues of ``G`` below about ``updates * eps / n_pairs`` times the
    largest (times `DRIFT_SAFETY`) may be drift, not data. The floor on singular
    values is the square root of that, and never below `NUMERICAL_RTOL`.
    """
    drift = _DRIFT_UNIT * updates / max(n_pairs, 1)
    return max(NUMERICAL_RTOL, math.sqrt(drift))


@kernel
def _count_above(values: np.ndarray, threshold: float) -> int:
    """``np.count_nonzero(values > threshold)`` of a 1-D array, without its two calls."""
    count = 0
    for value in values:
        if value > threshold:
            count += 1
    return count


def numerical_rank(sigma: np.ndarray, rtol: float = NUMERICAL_RTOL) -> int:
    """Count the singular values that are not numerically zero (below ``rtol * sigma_1``)."""
    if sigma.size == 0 or sigma[0] <= 0.0:
        return 0
    return int(_count_above(sigma, rtol * float(sigma[0])))


def _sorted_median(sigma: np.ndarray) -> float:
    """``np.median`` of values already sorted (either way), without its sort: same float."""
    n = sigma.shape[0]
    middle = float(sigma[n // 2])
    # np.median averages the two middle values as (a + b) / 2, and so does this.
    return middle if n % 2 else (float(sigma[n // 2 - 1]) + middle) / 2


def select_rank(
    sigma: np.ndarray,
    n_rows: int,
    n_cols: int,
    rule: RankRule,
    max_rank: int | None = None,
    rtol: float = NUMERICAL_RTOL,
) -> int:
    """Choose the truncation rank from singular values sorted in decreasing order.

    ``n_rows`` and ``n_cols`` are the shape of the snapshot matrix; only the
    Gavish-Donoho rule uses them (through the aspect ratio). ``rtol`` is the
    numerical floor relative to ``sigma_1`` (see `drift_rtol`).
    """
    limit = numerical_rank(sigma, rtol)
    if max_rank is not None:
        limit = min(limit, max_rank)
    if limit == 0:
        return 0
    if isinstance(rule, int | np.integer) and not isinstance(rule, bool):
        rank = int(rule)
    elif rule == "gd":
        beta = min(n_rows, n_cols) / max(n_rows, n_cols)
        threshold = gavish_donoho_omega(beta) * _sorted_median(sigma)
        rank = int(_count_above(sigma, threshold))
    else:
        energy = np.cumsum(sigma**2)
        rank = int(np.searchsorted(energy, float(rule) * energy[-1] * (1 - 1e-12)) + 1)
    return max(1, min(rank, limit))
