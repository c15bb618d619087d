"""The in-force component: the fit and the recall of the last scored tick, kept until the next.

The operator's eigendecomposition and the memory's recall cost most of a forecast,
and between two scored ticks (every ``ModelConfig.stride`` observations) they are
not taken again. A forecast at tick ``n = s + k`` (``s`` the last scored tick,
``0 <= k < stride``) uses:

* the fit of tick ``s`` (or of an exact refit since, which re-standardises the
  window and so is taken again), propagated from the *current* delay state, so
  every new observation still moves the forecast;
* the episodes recalled at ``s``, with their weights, each read ``k`` ticks further
  on in the history (`advanced_records`): the episode's counterpart of tick ``n``.

Both are saved with the model (the Gram matrices of tick ``s`` are gone by ``n``,
and the memory may hold more episodes than it did), so a forecast is a pure
function of the parameters and the observations, whatever the chunking, the
reads or the save/load in between.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .components import State, prefixed, unprefixed
from .episode_refs import EpisodeRefs
from .operator import KoopmanFit, fit_arrays, fit_from_arrays
from .recaller import Recall


class InForce:
    """The fit and recall in force: taken at scored ticks (the fit also at exact refits)."""

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


def advanced_records(
    records: dict[str, np.ndarray], k: int, refs: EpisodeRefs | None
) -> dict[str, np.ndarray]:
    """Recalled ``records`` with their windows ``k`` ticks later: state window and continuation.

    An episode recalled at tick ``s`` has origin ``o`` with ``o + horizon <= s - 1``,
    so its counterpart of tick ``s + k`` (origin ``o + k``) has a continuation ending
    by ``s + k - 1``: observed, and held by the history (which reaches back as far
    from ``s + k`` as it did from ``s``). ``refs`` reads them from this model's
    history; ``None`` (a shared memory holding copies) shifts within the copies,
    which leaves a continuation shorter by ``k`` (the analog expert carries its
    offset from the plain forecast beyond it).
    """
    if k == 0:
        return records
    history, continuation = records["history"], records["continuation"]
    if refs is not None:
        history, continuation = refs.windows(records["origin"] + k)
    else:
        shift = min(k, continuation.shape[1] - 1)  # keep one step of continuation
        both = np.concatenate([history, continuation], axis=1)
        width = history.shape[1]
        history, continuation = both[:, shift : shift + width], both[:, shift + width :]
    return records | {"history": history, "continuation": continuation}
