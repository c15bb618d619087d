"""The mixture's regret-based rules, BOA and ML-Poly: their updates and weights.

`ExpertMixture` (`episodic_koopman.mixture`) weighs experts by the hedge rule by
default. Rules ``"boa"`` and ``"mlpoly"`` carry a formal regret bound; they use
regrets rather than losses. At each scored step ahead, expert ``e``'s
instantaneous regret is ``r_e = loss(issued) - loss_e``: the issued (mixed)
forecast's absolute error less the expert's, in units of the series' scale,
averaged over channels. The absolute loss is convex, so the issued loss is at
most the weighted mean of the experts' losses, which is what the rules'
guarantees need.

* ``"boa"``: Bernstein Online Aggregation (Wintenberger, 2017), with adaptive
  learning rates ``eta_e = min(1 / (2 E_e), sqrt(log K / V_e))`` (``E_e`` the
  largest regret increment seen, ``V_e`` the sum of their squares) and weights
  proportional to ``eta_e exp(sum of eta_e r_e - (eta_e r_e)^2)``. A second-order
  regret bound against the best expert, with no learning rate to tune.
* ``"mlpoly"``: ML-Poly (Gaillard, Stoltz and van Erven, 2014): weights
  proportional to ``max(R_e, 0) / (1 + V_e)``, ``R_e`` the cumulative regret.

Both are per step ahead. Undiscounted (``decay = 0``), their regret against the
best expert grows as the square root of the number of rounds. With ``decay > 0``,
the sums are discounted, so the weights follow an expert that becomes best later
(recurring regimes). Experts that could not forecast at an origin are asleep
there: their regret does not move (the standard sleeping-experts reduction).

The state is four ``(n_experts, horizon)`` arrays, updated in place:
``regret`` (discounted regrets), ``second`` (their squared increments), ``boa``
(BOA's sum of ``eta r - (eta r)^2``) and ``range`` (the largest ``|r|`` seen).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RegretState:
    """The regret rules' sums, each ``(n_experts, horizon)``."""

    regret: np.ndarray
    second: np.ndarray
    boa: np.ndarray
    range: np.ndarray


def update_regrets(
    state: RegretState, rule: str, decay: float, steps: np.ndarray, r: np.ndarray
) -> None:
    """Discount and add regret increments ``r (E, P)`` at the columns ``steps``."""
    cols = _columns(steps)
    keep = 1.0 - decay
    second = keep * state.second[:, cols] + r * r
    state.regret[:, cols] = keep * state.regret[:, cols] + r
    state.second[:, cols] = second
    if rule == "boa":  # learning rates from the ranges and variances so far
        ranges = np.maximum(state.range[:, cols], np.abs(r))
        state.range[:, cols] = ranges
        eta = _boa_rates(ranges, second, r.shape[0])
        state.boa[:, cols] = keep * state.boa[:, cols] + eta * r - (eta * r) ** 2


def mlpoly_weights(state: RegretState, available: np.ndarray) -> np.ndarray:
    """ML-Poly: ``w_e`` proportional to ``max(R_e, 0) / (1 + V_e)`` among the awake."""
    positive = np.where(available[:, None], np.maximum(state.regret, 0.0), 0.0)
    scores = positive / (1.0 + state.second)
    total = scores.sum(axis=0, keepdims=True)
    uniform = np.broadcast_to(available[:, None] / max(available.sum(), 1), scores.shape)
    out = np.where(total > 0, scores / np.where(total > 0, total, 1.0), uniform)
    out.flags.writeable = False
    return out


def boa_weights(state: RegretState, available: np.ndarray) -> np.ndarray:
    """BOA: ``w_e`` proportional to ``eta_e exp(sum of eta r - (eta r)^2)`` among the awake."""
    eta = _boa_rates(state.range, state.second, state.regret.shape[0])
    logits = np.where(available[:, None], state.boa + np.log(eta), -np.inf)
    top = logits.max(axis=0, keepdims=True)
    w = np.exp(logits - np.where(np.isfinite(top), top, 0.0))
    out = w / w.sum(axis=0, keepdims=True)
    out.flags.writeable = False
    return out


def _columns(steps: np.ndarray) -> slice | np.ndarray:
    """Columns ``steps`` (distinct) as a slice when they are evenly spaced and ascending
    (the steps scored at one tick are a scoring stride apart): the same elements as
    indexing by ``steps``, without fancy indexing's copies."""
    listed = steps.tolist()
    first, last = listed[0], listed[-1]
    if len(listed) == 1:
        return slice(first, first + 1)
    stride = listed[1] - first
    if stride > 0 and listed == list(range(first, last + 1, stride)):
        return slice(first, last + 1, stride)
    return steps


def _boa_rates(ranges: np.ndarray, second: np.ndarray, n_experts: int) -> np.ndarray:
    """BOA's learning rates ``min(1 / (2 E), sqrt(log K / V))`` (1 before any regret)."""
    log_k = np.log(max(n_experts, 2))
    tiny = 1e-300  # a zero range means no regret yet (and then the rate is 1)
    adaptive = np.sqrt(log_k / np.maximum(second, tiny))
    return np.where(ranges > 0, np.minimum(0.5 / np.maximum(ranges, tiny), adaptive), 1.0)


__all__ = ["RegretState", "boa_weights", "mlpoly_weights", "update_regrets"]
