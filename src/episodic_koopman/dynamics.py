"""The operator component: the sliding-window DMD, when it is fitted, and when it refits."""

from __future__ import annotations

from typing import Any

import numpy as np

from .components import State
from .koopman_fit import KoopmanFit, Stabilize
from .operator import WindowedDMD
from .rank import RankRule
from .spectrum import Spectrum
from .trend_gate import trend_rise


class Dynamics:
    """A `WindowedDMD` with its schedule: first fit, exact refits, and stabilised propagation.

    The first fit comes once ``min(window, 2 * delays)`` snapshot pairs have
    arrived (observation ``ready_at``); after it, an exact refit every
    ``refit_every`` steps.
    """

    def __init__(
        self,
        n_features: int,
        window: int,
        rank: RankRule,
        max_rank: int,
        delays: int,
        refit_every: int,
        stabilize: Stabilize,
        detrend: bool = False,
        trend_gate: float | None = None,
    ) -> None:
        self.dmd = WindowedDMD(n_features, window, rank, max_rank, refit_every, detrend)
        # Decides each fit's detrending (`episodic_koopman.trend_gate`); None: ``detrend``.
        self.trend_gate = trend_gate
        self.window = window
        self.max_rank = max_rank
        self.min_pairs = min(window, 2 * delays)
        self.refit_every = refit_every
        self.stabilize = stabilize
        self.ready_at: int | None = None  # observation count at the first fit

    @property
    def n_features(self) -> int:
        return self.dmd.n_features

    def push(self, psi: np.ndarray) -> None:
        self.dmd.push(psi)

    def refit_due(self, n: int) -> bool:
        """Whether observation ``n`` (a count) brings the first fit or an exact refit."""
        if self.ready_at is None:
            if self.dmd.n_pairs >= self.min_pairs:
                self.ready_at = n
                return True
            return False
        since = n - self.ready_at
        return since > 0 and since % self.refit_every == 0

    def gate_trend(self, recent: np.ndarray) -> None:
        """Before a fit: detrend it if the line of the ``recent (k, c)`` observations rises
        by more than ``trend_gate`` residual standard deviations (no gate: as configured)."""
        if self.trend_gate is not None:
            self.dmd.use_detrend(bool(trend_rise(recent) > self.trend_gate))

    def fit(self) -> KoopmanFit:
        fit = self.dmd.fit()
        assert fit is not None
        return fit

    def propagate(self, fit: KoopmanFit, steps: int, readout: slice) -> np.ndarray:
        """Standardised forecast of the readout rows from the newest snapshot."""
        dmd = self.dmd
        return fit.propagate(dmd.newest(), steps, readout, self.stabilize, dmd.n_pushed - 1)

    def state(self, fit: KoopmanFit) -> np.ndarray:
        """The newest snapshot as ``fit`` sees it: less its trend line, if it has one."""
        dmd = self.dmd
        return fit.deviation(dmd.newest(), dmd.n_pushed - 1)

    def n_clipped(self, fit: KoopmanFit) -> int:
        """Eigenvalues of ``fit`` that forecasts pull onto the unit circle."""
        if self.stabilize != "clip":
            return 0
        return int(np.count_nonzero(np.abs(fit.eigenvalues) > 1.0))

    def spectrum(self, fit: KoopmanFit, dt: float) -> Spectrum:
        return Spectrum(
            eigenvalues=fit.eigenvalues,
            amplitudes=fit.amplitudes(self.state(fit)),
            modes=fit.modes,
            dt=dt,
        )

    def get_state(self) -> State:
        return {"ready_at": self.ready_at}, self.dmd.get_state()

    def set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.ready_at = None if meta["ready_at"] is None else int(meta["ready_at"])
        self.dmd.set_state(arrays)
