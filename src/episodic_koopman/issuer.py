"""`ForecastIssuer`: forecasts issued from a pipeline's state as it stands.

The pipeline's learning path changes the components' state; the issuer only reads
it. It turns the fit in force, the recall of the present and the classical experts
into the combined forecast (clipped to the envelope), the interval's scale, the
classical experts' forecast before the first fit, and the reference refit. What it
keeps is derived per tick and never saved: the combined forecast of one horizon,
the recall between scored ticks and the local scale.
"""

from __future__ import annotations

import numpy as np

from .combiner import Combiner
from .corrections import RecallContext
from .dynamics import Dynamics
from .envelope import recent_envelope
from .experts import ExpertBank
from .in_force import InForce
from .intervals import ConformalCalibrator
from .local_scale import LocalScale
from .model_settings import Settings
from .observables import Observables
from .operator import batch_dmd, detrended_batch_dmd
from .recaller import Recall, Recaller
from .stream import Stream


class ForecastIssuer:
    """Forecasts from the components of one pipeline (the same objects, read only)."""

    def __init__(
        self,
        settings: Settings,
        stream: Stream,
        obs: Observables,
        dyn: Dynamics,
        in_force: InForce,
        combiner: Combiner,
        calibrator: ConformalCalibrator,
        bank: ExpertBank | None,
        recaller: Recaller | None,
    ) -> None:
        self.settings, self.stream, self.obs, self.dyn = settings, stream, obs, dyn
        self.in_force, self.combiner, self.calibrator = in_force, combiner, calibrator
        self.bank, self.recaller = bank, recaller
        self.local_scale = LocalScale()  # derived from the history, never saved
        # The combined forecast of this tick for one horizon (the one scored at a scored
        # tick), and the recall between scored ticks: derived per tick, never saved.
        self._combined: tuple[int, int, np.ndarray, np.ndarray] | None = None
        self._recall: tuple[int, int, Recall | None] | None = None

    def interval_scale(self) -> np.ndarray:
        """The series' local scale now, ``(c,)``: the unit of the intervals' scores."""
        return self.local_scale.of(self.obs.history, self.obs.scaler.current()[1])

    # ------------------------------------------------------------------ before the first fit
    def combine_early(self, steps: int) -> tuple[np.ndarray, ...]:
        """The classical experts' forecasts and their combination, before the first fit."""
        assert self.bank is not None
        history, n = self.obs.history, self.stream.n
        classical = self.bank.forecast(history, n, steps)
        plain = np.zeros((steps, history.last(1).shape[1]))
        return self.combiner.combine(
            plain, None, _no_context, classical, plain_ready=False, bounds=self.envelope()
        )

    def early_forecast(self, horizon: int, level: float) -> tuple[np.ndarray, np.ndarray] | None:
        """``(mean, half-width)`` from the classical experts before the first fit.

        ``None`` while no classical expert but the last value can forecast.
        """
        if self.bank is None or self.stream.n < 1:
            return None
        mean, spread, _, available = self.combine_early(horizon)
        if not any(
            a
            for a, name in zip(available, self.combiner.expert_names, strict=True)
            if name not in ("plain", "last")
        ):
            return None
        half = self.calibrator.half_width(level, spread, horizon, self.interval_scale())
        return mean, half

    # ------------------------------------------------------------------ after it
    def combine(
        self, steps: int, recall: Recall | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every expert's forecast and their combination (see `Combiner.combine`).

        The plain forecast propagates the fit in force (`InForce`) from the current
        delay state; ``recall`` is the present's (`recall_now`).
        """
        obs, fit = self.obs, self.in_force.fit
        assert fit is not None
        readout = obs.embedding.readout
        plain = obs.to_raw(self.dyn.propagate(fit, steps, readout))

        def context() -> RecallContext:
            assert obs.ref_mean is not None and obs.ref_scale is not None
            return RecallContext(
                plain=plain,
                history=obs.history.last(max(self.settings.delays, self.settings.state_delays)),
                ref_mean=obs.ref_mean,
                ref_scale=obs.ref_scale,
                lift=obs.lift,
                readout=readout,
                stabilize=self.dyn.stabilize,
            )

        bank = self.bank
        classical = None if bank is None else bank.forecast(obs.history, self.stream.n, steps)
        return self.combiner.combine(plain, recall, context, classical, bounds=self.envelope())

    def envelope(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Where experts' forecasts are clipped (see `envelope`), ``None`` for nowhere.

        The range is that of the operator's span, ``window + delays - 1`` observations.
        Until the history holds them, it is that of the ``k`` observations held, with
        the margin widened by ``span / k``.
        """
        margin, history = self.settings.config.envelope, self.obs.history
        span = self.settings.window + self.settings.delays - 1
        held = min(history.count, span)
        if margin is None or held < 2:
            return None
        # A shorter history may not span a cycle yet: its range says less, so the bound is
        # looser. But still a bound: a local AR fitted on a few rows across an early outage
        # forecast 1e14 (water_flow at its first fit), and a scored forecast that far off
        # made every interval astronomical while the calibrator kept its score.
        return recent_envelope(history.last(held), margin * span / held)

    def recall_now(self) -> Recall | None:
        """The episodes recalled for the current tick (after `flush`; cached per tick).

        At a scored tick, the recall made then. In between, the present's query (the
        fit in force seen from the current delay state, and the newest state window)
        is matched against the memory as it is now, without feeding the threshold.
        """
        held, recaller = self.in_force, self.recaller
        n = self.stream.n
        if recaller is None or n == held.recall_tick:
            return held.recall
        version = recaller.memory.next_id  # episodes ever filed: the cache's other key
        cached = self._recall
        if cached is not None and cached[:2] == (n, version):
            return cached[2]
        assert held.fit is not None
        obs = self.obs
        query = recaller.query(held.fit, self.dyn.state(held.fit), obs.embedding, obs.history)
        recall = recaller.recall(query, n - 1, observe=False)
        self._recall = (n, version, recall)
        return recall

    def keep(self, n: int, horizon: int, mean: np.ndarray, spread: np.ndarray) -> None:
        """Keep a combined forecast for the rest of tick ``n`` (read-only from now on)."""
        mean.flags.writeable = spread.flags.writeable = False
        self._combined = (n, horizon, mean, spread)

    def mean_spread(self, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, spread)`` of the combined forecast (read-only, cached per tick and
        horizon); the pipeline brings the episodes up to date first."""
        n = self.stream.n
        cached = self._combined
        if cached is not None and cached[:2] == (n, horizon):
            return cached[2], cached[3]
        mean, spread, _, _ = self.combine(horizon, self.recall_now())
        self.keep(n, horizon, mean, spread)
        return mean, spread

    def reference_forecast(self, horizon: int) -> np.ndarray:
        """The plain forecast by an exact SVD refit, ``(horizon, c)``: of the window the fit
        in force was taken on (at the last scored tick or exact refit), propagated from
        the current delay state."""
        dmd, held = self.dyn.dmd, self.in_force
        assert held.fit_tick is not None
        since = self.stream.n - held.fit_tick
        # The window of the fit's tick: snapshots in the current standardisation, which
        # is the fit's (an exact refit since would have put a new fit in force).
        n_snapshots = min(dmd.n_pushed - since, dmd.window + 1)
        snaps = self.obs.snapshots(n_snapshots + since)[:n_snapshots]
        s = self.settings
        if held.fit is not None and held.fit.trend is not None:  # (gated: per fit)
            index = dmd.n_pushed - 1 - since  # the newest snapshot at the fit's tick
            fit = detrended_batch_dmd(snaps, s.rank, s.config.max_rank, index)
        else:
            fit = batch_dmd(snaps[:-1].T, snaps[1:].T, s.rank, s.config.max_rank)
        readout, stabilize = self.obs.embedding.readout, self.dyn.stabilize
        path = fit.propagate(dmd.newest(), horizon, readout, stabilize, dmd.n_pushed - 1)
        return self.obs.to_raw(path)


def _no_context() -> RecallContext:
    raise AssertionError("no recall before the first fit")
