"""The combiner: every expert's forecast, and how they are combined into one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .components import State
from .corrections import RecallContext, make_correction
from .jit import kernel
from .mixture import ExpertMixture
from .recall import Alignment
from .recaller import Recall
from .reduction_order import leading_sum


class Combiner:
    """The plain forecast, the memory experts and the classical ones, combined.

    With ``mixture`` settings (decay, eta, fast decay, rule), experts are weighted
    per step ahead by `ExpertMixture`; without, the single memory expert replaces
    the plain forecast whenever recall is admitted (and there are no classical
    experts). Experts are ordered plain, memory, classical.
    """

    def __init__(
        self,
        memory_experts: list[str],
        alignment: Alignment,
        blend: float,
        horizon: int,
        mixture: tuple[float, float, float, str] | None,
        classical: list[str] | None = None,
    ) -> None:
        self.corrections = {
            name: make_correction(name, alignment, blend) for name in memory_experts
        }
        self.memory_names = list(memory_experts)
        self.classical_names = list(classical or [])
        if self.classical_names and mixture is None:
            raise ValueError("classical experts need a mixture to be weighed in")
        self.expert_names = ["plain", *memory_experts, *self.classical_names]
        self.mixture = ExpertMixture(self.expert_names, horizon, *mixture) if mixture else None

    @property
    def needs_successor(self) -> bool:
        """Whether episodes must keep the operator fitted after them (``transfer``)."""
        return "transfer" in self.corrections

    @property
    def learner(self) -> ExpertMixture | None:
        """The mixture to teach from realised errors (``None`` if there is nothing to weigh)."""
        return self.mixture if self.mixture is not None and len(self.expert_names) > 1 else None

    def combine(
        self,
        plain: np.ndarray,
        recall: Recall | None,
        context: Callable[[], RecallContext],
        classical: tuple[np.ndarray, np.ndarray] | None = None,
        plain_ready: bool = True,
        bounds: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every expert's forecast and their combination.

        Returns ``(mean, spread, tracks, available)``: ``tracks`` is
        ``(n_experts, steps, c)`` (zeros where an expert is unavailable).
        ``context`` builds what corrections may use about the present (only when
        recall is admitted). ``classical`` is the classical experts' ``(tracks,
        available)`` (`ExpertBank.forecast`); ``plain_ready`` is false before the
        operator's first fit (the classical experts forecast alone then).
        ``bounds`` (low, high per channel) clips every expert's forecast (`envelope`).
        """
        tracks = np.zeros((len(self.expert_names), *plain.shape))
        spreads = np.zeros(tracks.shape)
        available = np.zeros(len(self.expert_names), dtype=bool)
        tracks[0], available[0] = plain, plain_ready
        if recall is not None and recall.admitted:
            present = context()
            for i, name in enumerate(self.memory_names, start=1):
                tracks[i], spreads[i] = self.corrections[name].correct(
                    present, recall.records, recall.weights
                )
                available[i] = True
        if classical is not None:
            first = 1 + len(self.memory_names)
            tracks[first:], available[first:] = classical
        if self.mixture is None:
            if bounds is not None:
                _clip(tracks, bounds[0], bounds[1])
            chosen = 1 if available[-1] and len(available) > 1 else 0
            return tracks[chosen], spreads[chosen], tracks, available
        weights = self.mixture.weights(available, plain.shape[0])
        if bounds is None:
            mean, spread = _mixed(tracks, spreads, weights, _NO_BOUND, _NO_BOUND, False)
        else:
            mean, spread = _mixed(tracks, spreads, weights, bounds[0], bounds[1], True)
        return mean, spread, tracks, available

    def expert_weights(self, horizon: int) -> dict[str, list[float]] | None:
        """The mixture's weight of each expert per step ahead, all experts available."""
        if self.mixture is None:
            return None
        available = np.ones(len(self.expert_names), dtype=bool)
        w = self.mixture.weights(available, horizon)
        return {name: w[i].tolist() for i, name in enumerate(self.expert_names)}

    def get_state(self) -> State:
        return {}, ({} if self.mixture is None else self.mixture.get_state())

    def set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        if self.mixture is not None:
            self.mixture.set_state(arrays)


_NO_BOUND = np.zeros(0)  # `_mixed`'s bounds when there are none


@kernel
def _clip(tracks: np.ndarray, low: np.ndarray, high: np.ndarray) -> None:
    """``np.clip(tracks, low, high, out=tracks)`` of ``(E, H, c)`` tracks, bounds ``(c,)``:
    NumPy's ``min(max(x, low), high)``, NaN kept."""
    n_experts, steps, c = tracks.shape
    for e in range(n_experts):
        for h in range(steps):
            for j in range(c):
                x = tracks[e, h, j]
                if not np.isnan(x):
                    x = x if x > low[j] else low[j]
                if not np.isnan(x):
                    x = x if x < high[j] else high[j]
                tracks[e, h, j] = x


@kernel
def _mixed(
    tracks: np.ndarray,
    spreads: np.ndarray,
    weights: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    clip: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """The weighted mean and spread of the experts' ``(E, H, c)`` tracks (clipped first,
    in place, to ``low`` and ``high`` if ``clip``), weights ``(E, H)``.

    The same floats as ``np.add.reduce(weights[:, :, None] * tracks, axis=0)``: the
    products, then their sums over experts in NumPy's order (`leading_sum`).
    """
    if clip:
        _clip(tracks, low, high)
    n_experts, steps, c = tracks.shape
    products = np.empty((n_experts, steps * c))
    spread_products = np.empty((n_experts, steps * c))
    for e in range(n_experts):
        for h in range(steps):
            w = weights[e, h]
            for j in range(c):
                products[e, h * c + j] = w * tracks[e, h, j]
                spread_products[e, h * c + j] = w * spreads[e, h, j]
    mean, spread = np.empty((steps, c)), np.empty((steps, c))
    for h in range(steps):
        for j in range(c):
            mean[h, j] = leading_sum(products, h * c + j)
            spread[h, j] = leading_sum(spread_products, h * c + j)
    return mean, spread
