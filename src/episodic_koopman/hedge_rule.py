"""The hedge rule's arithmetic, as compiled loops over the mixture's arrays.

`ExpertMixture` (see `episodic_koopman.mixture` for the rule) keeps its loss sums
``loss`` and masses ``mass`` as ``(n_experts, horizon)`` arrays; these kernels update
them in place when losses arrive and turn them into weights. Every forecast after a
score asks for new weights, and a scored tick updates a few columns, so each is a
few dozen floats, where NumPy's per-call dispatch cost far more than the arithmetic.

The loops perform the operations of the NumPy formulas they replace, element by
element and in the same order (sums over experts in NumPy's order, see
`episodic_koopman.reduction_order`), without fused multiply-adds: the same floats.
The exponential is left to NumPy (`hedge_weights`): its implementation may differ
from the C library's, which a compiled loop would call.

>>> import numpy as np
>>> loss, mass = np.array([[0.5], [1.0]]), np.array([[1.0], [1.0]])
>>> w = hedge_weights(loss, mass, np.ones(2), False, np.array([True, True]), 1.0, 0.0, True)[0]
>>> [round(x, 6) for x in w[:, 0].tolist()]
[0.731059, 0.268941]
"""

from __future__ import annotations

import numpy as np

from .jit import kernel
from .reduction_order import leading_sum

#: A prior weight below this (in units of the record's full mass, 1) counts as none.
NEGLIGIBLE_PRIOR = 1e-9


@kernel
def update_losses(
    loss: np.ndarray,
    mass: np.ndarray,
    fast: np.ndarray,
    steps: np.ndarray,
    losses: np.ndarray,
    available: np.ndarray,
    decay: float,
    cap: float,
    fast_decay: float,
) -> None:
    """Discount and add ``losses (P, E)`` at the distinct columns ``steps (P,)``, in place.

    Only available experts move; each loss enters truncated at ``cap`` (``inf``: none).
    With ``fast_decay > 0``, the one-step losses also enter ``fast (E, 2)`` (the fast
    average and its mass).
    """
    keep = 1.0 - decay
    n_rows, n_experts = losses.shape
    for p in range(n_rows):
        h = steps[p]
        for e in range(n_experts):
            if available[p, e]:
                value = losses[p, e]
                if value > cap:  # NaN stays NaN, as np.minimum keeps it
                    value = cap
                loss[e, h] = keep * loss[e, h] + decay * value
                mass[e, h] = keep * mass[e, h] + decay
    if fast_decay <= 0:
        return
    for p in range(n_rows):
        if steps[p] != 0:
            continue
        keep_fast = 1.0 - fast_decay
        for e in range(n_experts):
            if available[p, e]:
                value = losses[p, e]
                if value > cap:
                    value = cap
                fast[e, 0] = keep_fast * fast[e, 0] + fast_decay * value
                fast[e, 1] = keep_fast * fast[e, 1] + fast_decay
        return  # only the first one-step row counts (the steps are distinct)


@kernel
def _shifted_logits(
    loss: np.ndarray,
    mass: np.ndarray,
    factor: np.ndarray,
    use_factor: bool,
    available: np.ndarray,
    eta: float,
    prior_scale: float,
    prior_gone: bool,
    out: np.ndarray,
) -> tuple[bool, bool]:
    """The hedge logits less their column maxima, into ``out (E, H)``.

    ``prior_gone``: every prior weight was negligible at an earlier call. Masses only
    grow towards 1, so it stays so, and once every expert has mass everywhere the
    priors are not looked at again. Returns ``(all_scored, prior_gone)`` as now.
    """
    n_experts, horizon = loss.shape
    any_available, all_available = False, True
    for e in range(n_experts):
        if available[e]:
            any_available = True
        else:
            all_available = False
    # The record's means (NaN where never scored), scaled by the regime factor.
    losses = np.empty((n_experts, horizon))
    all_scored, any_unscored = True, False
    for e in range(n_experts):
        for h in range(horizon):
            if mass[e, h] > 0:
                value = loss[e, h] / mass[e, h]
            else:
                value = np.nan
                all_scored = False
            if use_factor:
                value = value * factor[e]
            if np.isnan(value):
                any_unscored = True
            losses[e, h] = value
    prior = np.zeros((n_experts, horizon))
    if all_scored and prior_gone:
        complete, without_prior = any_available, True
    else:
        prior_gone, without_prior = True, True
        for e in range(n_experts):
            for h in range(horizon):
                weight = prior_scale * (1.0 - mass[e, h])
                if weight < NEGLIGIBLE_PRIOR:
                    weight = 0.0
                prior[e, h] = weight
                if weight != 0.0:
                    prior_gone = False
                if available[e] and weight > 0:
                    without_prior = False
        complete = (not any_unscored) and any_available
    if complete and without_prior and all_available:
        for h in range(horizon):
            best = losses[0, h]
            for e in range(1, n_experts):
                best = _minimum(best, losses[e, h])
            best = _maximum(best, 1e-12)
            for e in range(n_experts):
                out[e, h] = -eta * (losses[e, h] / best - 1.0)
    else:
        n_known = np.zeros(horizon, dtype=np.int64)
        if complete and without_prior:
            filled = losses
        else:
            filled = _shrunk(losses, mass, prior, available, n_known)
        for h in range(horizon):
            best = np.inf
            for e in range(n_experts):
                if available[e]:
                    best = _minimum(best, filled[e, h])
            best = _maximum(best, 1e-12)
            for e in range(n_experts):
                if not available[e]:
                    out[e, h] = -np.inf
                elif complete or n_known[h] > 0:
                    out[e, h] = -eta * (filled[e, h] / best - 1.0)
                else:  # no expert scored at this step: uniform over the available
                    out[e, h] = 0.0
    for h in range(horizon):
        top = out[0, h]
        for e in range(1, n_experts):
            top = _maximum(top, out[e, h])
        for e in range(n_experts):
            out[e, h] = out[e, h] - top
    return all_scored, prior_gone


@kernel
def _shrunk(
    losses: np.ndarray,
    mass: np.ndarray,
    prior: np.ndarray,
    available: np.ndarray,
    n_known: np.ndarray,
) -> np.ndarray:
    """Loss estimates shrunk towards the prior guess (see `episodic_koopman.mixture`),
    and the count of available scored experts per step into ``n_known``.

    ``losses`` are the record's means (NaN where never scored), ``prior`` the prior's
    weight per expert and step. Step by step, since each step's guess is the
    previous step's estimate relative to the mean there.
    """
    n_experts, horizon = losses.shape
    filled = np.empty((n_experts, horizon))
    relative = np.ones(n_experts)  # each expert's estimated loss / the mean
    records = np.zeros((n_experts, horizon))  # the scored losses of available experts
    for e in range(n_experts):
        for h in range(horizon):
            if available[e] and not np.isnan(losses[e, h]):
                records[e, h] = losses[e, h]
                n_known[h] += 1
    for h in range(horizon):
        mean = leading_sum(records, h) / max(n_known[h], 1)
        for e in range(n_experts):
            guess = relative[e] * mean
            known = available[e] and not np.isnan(losses[e, h])
            scored_mass = mass[e, h] if known else 0.0
            if scored_mass <= 0:  # no record: the guess alone
                filled[e, h] = guess
            else:
                total = _maximum(scored_mass + prior[e, h], 1e-300)
                filled[e, h] = (scored_mass * records[e, h] + prior[e, h] * guess) / total
        if mean > 0:
            for e in range(n_experts):
                if available[e]:
                    relative[e] = filled[e, h] / mean
    return filled


@kernel
def _normalize_columns(w: np.ndarray) -> None:
    """Divide each column of ``w`` by its sum (in NumPy's order), in place."""
    n_experts, horizon = w.shape
    for h in range(horizon):
        total = leading_sum(w, h)
        for e in range(n_experts):
            w[e, h] = w[e, h] / total


@kernel
def _minimum(a: float, b: float) -> float:
    """``np.minimum`` of two floats (NaN if either is), as NumPy's scalar loop has it."""
    return a if a < b or np.isnan(a) else b


@kernel
def _maximum(a: float, b: float) -> float:
    """``np.maximum`` of two floats (NaN if either is), as NumPy's scalar loop has it."""
    return a if a > b or np.isnan(a) else b


def hedge_weights(
    loss: np.ndarray,
    mass: np.ndarray,
    factor: np.ndarray,
    use_factor: bool,
    available: np.ndarray,
    eta: float,
    prior_scale: float,
    prior_gone: bool,
) -> tuple[np.ndarray, bool, bool]:
    """Read-only weights ``(E, H)`` of the hedge rule, and ``(all_scored, prior_gone)``.

    ``loss`` and ``mass`` are the discounted sums, ``factor (E,)`` each expert's
    regime factor (read when ``use_factor``), ``prior_scale`` the prior's weight per
    unit of missing mass (``PRIOR_FORECASTS * decay``), ``prior_gone`` as in
    `_shifted_logits`.
    """
    out = np.empty(loss.shape)
    all_scored, prior_gone = _shifted_logits(
        loss, mass, factor, use_factor, available, eta, prior_scale, prior_gone, out
    )
    np.exp(out, out=out)
    _normalize_columns(out)
    out.flags.writeable = False
    return out, all_scored, prior_gone


__all__ = ["NEGLIGIBLE_PRIOR", "hedge_weights", "update_losses"]
