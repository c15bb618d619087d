"""A Koopman operator at another delay embedding, as one more expert of the mixture.

The model's own operator sees the series through one embedding (``delays`` lags).
A `KoopmanExpert` is the plain Hankel DMD forecast at another scale, sharing
everything else with the model: the history it reads, the mixture that weighs
it, the scoring and the intervals. It keeps no state of its own: at each block
boundary ``b`` (a multiple of the scoring stride) its fit is the exact truncated
DMD of the newest ``window`` snapshots up to ``b``, standardised by those rows'
own mean and scale, so it is a function of the history alone (whatever the
chunking, the reads, or a save/load). The fit is cached for the block, and made
only when a forecast asks for it (at scored steps, once per block).

Cost: one SVD of a ``(delays x channels) x window`` matrix per block.

>>> import numpy as np
>>> from episodic_koopman.embedding import History
>>> h = History(length=600, n_channels=1)
>>> for t in range(200):
...     h.append(np.array([np.sin(2 * np.pi * t / 12)]))
>>> expert = KoopmanExpert("koopman12", delays=12, block=8)
>>> path = expert.forecast(h, 200, 3)[:, 0]
>>> bool(np.abs(path - np.sin(2 * np.pi * np.arange(200, 203) / 12)).max() < 1e-6)
True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .components import State
from .embedding import DelayEmbedding, History
from .koopman_fit import KoopmanFit
from .operator import batch_dmd
from .rank import RankRule

#: Snapshot pairs in an expert's window, and the cap on its rank (the model's defaults).
KOOPMAN_WINDOW = 256
KOOPMAN_MAX_RANK = 16


class KoopmanExpert:
    """The plain forecast of a Hankel DMD with ``delays`` lags, refitted at every block."""

    def __init__(
        self,
        name: str,
        delays: int,
        block: int,
        window: int = KOOPMAN_WINDOW,
        rank: RankRule = "gd",
        max_rank: int = KOOPMAN_MAX_RANK,
    ) -> None:
        self.name, self.delays, self.block, self.window = name, delays, block, window
        self.rank, self.max_rank = rank, max_rank
        # (boundary, fit, mean, scale): derived from the history, never saved.
        self._cache: tuple[int, KoopmanFit, np.ndarray, np.ndarray] | None = None

    def advance(self, history: History, n: int) -> None:
        pass  # the fit is made from the history when a forecast asks for it

    def _fit_at(self, history: History, n: int) -> tuple[KoopmanFit, np.ndarray, np.ndarray] | None:
        """The fit of the block boundary at or before ``n`` (``None``: too few observations)."""
        d = self.delays
        boundary = n - n % self.block
        pairs = min(self.window, boundary - d)
        since = n - boundary
        if pairs < min(self.window, 2 * d) or history.length < since + pairs + d:
            return None
        cached = self._cache
        if cached is not None and cached[0] == boundary:
            return cached[1], cached[2], cached[3]
        raw = history.last(since + pairs + d)[: pairs + d]  # the rows up to the boundary
        mean = raw.mean(axis=0)
        spread = raw.std(axis=0)
        scale = np.where(spread > 0, spread, 1.0)
        snapshots = DelayEmbedding(d, raw.shape[1]).snapshots(raw, mean, scale)
        fit = batch_dmd(snapshots[:-1].T, snapshots[1:].T, self.rank, self.max_rank)
        self._cache = (boundary, fit, mean, scale)
        return fit, mean, scale

    def forecast(self, history: History, n: int, steps: int) -> np.ndarray | None:
        made = self._fit_at(history, n)
        if made is None:
            return None
        fit, mean, scale = made
        embedding = DelayEmbedding(self.delays, mean.shape[0])
        psi = embedding.snapshot(history.last(self.delays), mean, scale)
        path = fit.propagate(psi, steps, embedding.readout, "clip")
        return path * scale + mean

    def get_state(self) -> State:
        return {}, {}

    def set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self._cache = None
