"""The in-force component: the operator's fit of the last scored tick, kept until the next.

The eigendecomposition of the operator costs much of a forecast, and between two
scored ticks (every ``ModelConfig.stride_at(n)`` observations) it is not taken again. A
forecast at tick ``n = s + k`` (``s`` the last scored tick, ``k`` below the stride)
propagates the fit of tick ``s`` (or of an exact refit since, which re-standardises
the window, so its fit is taken then) from the *current* delay state: every new
observation still moves the forecast. The memory's query is that fit seen from the
current state, with the newest state window, and the recall is made against the
memory as it is at ``n`` (`Pipeline.recall_now`); the recall of the scored tick
itself is kept too (it fed the adaptive threshold).

Both are saved with the model (the Gram matrices of tick ``s`` are gone by ``n``),
so a forecast is a pure function of the parameters and the observations, whatever
the chunking, the reads or the save/load in between.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .components import State, prefixed, unprefixed
from .koopman_fit import KoopmanFit, fit_arrays, fit_from_arrays
from .recaller import Recall


class InForce:
    """The fit in force and the scored tick's recall (the fit also taken at exact refits)."""

    def __init__(self) -> None:
        self.fit_tick: int | None = None  # observation count when the fit was taken
        self.fit: KoopmanFit | None = None
        self.recall_tick: int | None = None  # the last scored tick
        self.recall: Recall | None = None

    def take(self, n: int, fit: KoopmanFit, recall: Recall | None) -> None:
        """At scored tick ``n``: this fit and this recall are in force from now."""
        self.fit_tick, self.fit = n, fit
        self.recall_tick, self.recall = n, recall

    def refit(self, n: int, fit: KoopmanFit) -> None:
        """At an exact refit between scored ticks: the window's new standardisation."""
        self.fit_tick, self.fit = n, fit

    def get_state(self) -> State:
        recall = self.recall
        meta: dict[str, Any] = {
            "fit_tick": self.fit_tick,
            "recall_tick": self.recall_tick,
            "has_recall": recall is not None,
        }
        arrays: dict[str, np.ndarray] = {}
        if self.fit is not None:
            arrays |= prefixed("fit", fit_arrays(self.fit))
        if recall is not None:
            meta |= {"admitted": recall.admitted, "records": sorted(recall.records)}
            arrays |= {"ids": recall.ids, "distances": recall.distances, "weights": recall.weights}
            arrays |= prefixed("records", recall.records)
        return meta, arrays

    def set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.fit_tick = None if meta["fit_tick"] is None else int(meta["fit_tick"])
        self.recall_tick = None if meta["recall_tick"] is None else int(meta["recall_tick"])
        self.fit = fit_from_arrays(unprefixed("fit", arrays)) if self.fit_tick is not None else None
        self.recall = None
        if meta["has_recall"]:
            records = unprefixed("records", arrays)
            self.recall = Recall(
                ids=np.array(arrays["ids"]),
                distances=np.array(arrays["distances"]),
                weights=np.array(arrays["weights"]),
                records={name: np.array(records[name]) for name in meta["records"]},
                admitted=bool(meta["admitted"]),
            )
