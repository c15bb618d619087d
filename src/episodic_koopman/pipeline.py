"""The components of one model, wired: learning a step, catching up, forecasting.

`EpisodicKoopman` validates input and parameters and builds a `Pipeline` (from its
`Settings`, `episodic_koopman.model_settings`) once the number of channels is known;
the pipeline runs every learning step, and brings episodes up to date before a
forecast is issued (`episodic_koopman.issuer`).
"""

from __future__ import annotations

import numpy as np

from .combiner import Combiner
from .components import ArraysOnly, Component
from .config import MemoryConfig
from .drift_gate import DriftGate
from .dynamics import Dynamics
from .embedding import make_lifting
from .episode_refs import EpisodeRefs
from .experts import AR_ORDER, PERIOD_WINDOW, ExpertBank
from .in_force import InForce
from .intervals import ConformalCalibrator
from .issuer import ForecastIssuer
from .koopman_fit import KoopmanFit
from .memory import EpisodeMemory
from .model_settings import Settings
from .observables import Observables
from .recall import KeyWeights
from .recaller import Recall, Recaller
from .recorder import EpisodeRecorder
from .scorer import ForecastScorer, PendingScore
from .stream import Stream
from .threads import single_threaded


class Pipeline:
    """The components of a model of ``n_channels`` channels, and the order they run in.

    ``memory`` is the episode memory to use (the model's own, or one attached and
    perhaps shared), ``None`` without memory.
    """

    def __init__(
        self,
        settings: Settings,
        n_channels: int,
        stream: Stream,
        memory: EpisodeMemory | None,
        source: int = 0,
    ) -> None:
        s, cfg, mem, c = settings, settings.config, settings.memory, n_channels
        self.settings, self.stream = s, stream
        lifting = make_lifting(cfg.lifting, cfg.n_components, cfg.bandwidth, s.seed)
        # Batched episodes read back up to a stride beyond a state or a continuation,
        # and `reference_forecast` the window of a fit up to a stride old.
        stride = cfg.max_stride
        history_length = working = max(
            s.window + s.delays + stride,
            s.episode_horizon + stride + 1,
            s.state_delays + stride + 1,
        )
        if mem is not None:
            # Episodes are references into the history: it spans every live episode's
            # state window and continuation (plus the episodes not yet filed).
            span = mem.capacity * mem.stride + s.state_delays + s.episode_horizon
            history_length = max(history_length, span + stride + 1)
        # Classical experts weigh in only through a mixture (not beside a single strategy).
        kinds = cfg.classical_names() if mem is None or mem.strategy == "mixture" else []
        # The experts' blocks stay at the base stride (a growing stride leaves them be).
        self.bank = ExpertBank(kinds, cfg.stride) if kinds else None
        if self.bank is not None:  # the AR's lags and the period finder's span
            history_length = max(history_length, cfg.stride + AR_ORDER + 1, PERIOD_WINDOW)
        # A margin of the working span: a long history is shifted once per `working` steps.
        self.obs = Observables(s.delays, c, history_length, lifting, history_margin=working)
        refit_every = cfg.refit_every if cfg.refit_every is not None else s.window
        # The gate decides per fit where ``detrend`` is off; never with the transfer
        # expert, whose stored fits propagate the raw state.
        transfer = mem is not None and "transfer" in mem.expert_names()
        gate = None if cfg.detrend or transfer else cfg.trend_gate
        self.dyn = Dynamics(
            self.obs.n_features,
            s.window,
            s.rank,
            cfg.max_rank,
            s.delays,
            refit_every,
            cfg.stabilize,  # type: ignore[arg-type]
            cfg.detrend,
            gate,
        )
        self.calibrator = ConformalCalibrator(s.episode_horizon, c, cfg.calibration_window)
        self.scorer = ForecastScorer(s.episode_horizon)
        self.recaller: Recaller | None = None
        self.recorder: EpisodeRecorder | None = None
        self.in_force = InForce()
        classical = self.bank.names if self.bank is not None else []
        if mem is None or memory is None:
            # The plain forecast and the classical experts, mixed as a memory's default would.
            default = MemoryConfig()
            mixture = (
                default.mixture_decay,
                default.mixture_eta,
                default.mixture_fast_decay,
                default.mixture_rule,
            )
            self.combiner = Combiner(
                [], "zscore", 1.0, s.episode_horizon, mixture if classical else None, classical
            )
        else:
            mixture = (mem.mixture_decay, mem.mixture_eta, mem.mixture_fast_decay, mem.mixture_rule)
            self.combiner = Combiner(
                mem.expert_names(),
                mem.alignment,  # type: ignore[arg-type]
                mem.blend,
                s.episode_horizon,
                mixture if mem.strategy == "mixture" else None,
                classical,
            )
            weights = KeyWeights(mem.eigenvalue_weight, mem.mode_weight, mem.state_weight)
            gate = DriftGate(mem.drift_gate, mem.gate_span, s.seed) if mem.drift_gate else None
            refs = EpisodeRefs(
                self.obs.history,
                s.state_delays,
                s.episode_horizon,
                keep_modes=mem.mode_weight > 0,
                window_span=s.window + s.delays - 1,
            )
            self.recaller = Recaller(
                memory,
                refs,
                weights,
                cfg.max_rank,
                s.mode_length(c),
                s.state_delays,
                mem.candidates,
                mem.top_k,
                mem.tau,
                mem.recall_quantile,
                gate,
            )
            self.recorder = EpisodeRecorder(
                memory,
                refs,
                weights,
                s.episode_horizon,
                mem.stride,
                s.state_delays,
                successor=self.combiner.needs_successor,
                keep_forecast="residual" in self.combiner.corrections,
            )
            self.recorder.source = source
        self.issuer = ForecastIssuer(
            s,
            stream,
            self.obs,
            self.dyn,
            self.in_force,
            self.combiner,
            self.calibrator,
            self.bank,
            self.recaller,
        )

    def components(self) -> dict[str, Component]:
        """The stateful components by name."""
        parts: dict[str, Component] = {
            "observables": self.obs,
            "operator": self.dyn,
            "intervals": ArraysOnly(self.calibrator),
            "scorer": self.scorer,
            "combiner": self.combiner,
            "in_force": self.in_force,
        }
        if self.recaller is not None and self.recorder is not None:
            parts |= {"recall": self.recaller, "recorder": self.recorder}
        if self.bank is not None:
            parts |= self.bank.components()
        return parts

    @property
    def is_fitted(self) -> bool:
        return self.dyn.ready_at is not None

    # ------------------------------------------------------------------ learning
    def step(self, values: np.ndarray, owned: bool = False) -> None:
        """Learn one validated observation (``owned``: a new array no one else holds)."""
        stream, obs, dyn = self.stream, self.obs, self.dyn
        stream.last_finite = values if owned else values.copy()
        obs.observe(values)
        n = stream.n = stream.n + 1
        bank = self.bank
        if bank is not None and n % bank.block == 0:  # absorbs a block at every boundary
            bank.advance(obs.history, n)
        if n < self.settings.delays:
            self._score_early(n)
            return
        if obs.ref_mean is None:
            obs.anchor()
        obs.push_newest(dyn.dmd)
        refit = dyn.refit_due(n)
        if dyn.ready_at is None:
            self._score_early(n)
            return
        since = n - dyn.ready_at
        if since == 0 and self.recorder is not None:
            self.recorder.cursor = n - 1
        scored = since % self.settings.config.stride_at(n) == 0
        if not (refit or scored):
            return  # the episodes of the steps in between are made in one batch, later
        # Only these steps run LAPACK (and refits BLAS level 3): pin threads for them.
        with single_threaded():
            # Episodes up to the previous observation belong to the fit and standardisation
            # in force until now: bring them up to date before either changes.
            self.flush(upto=n - 2)
            if refit:  # refresh the standardisation and refit the window exactly
                obs.anchor()
                dyn.dmd.replace_snapshots(obs.snapshots(dyn.dmd.n_snapshots))
            if scored:
                self._score_tick(n)
            else:  # the held fit was in the old standardisation: take the refit's
                self._gate_trend()
                self.in_force.refit(n, dyn.fit())

    def _score_tick(self, n: int) -> None:
        """Fit, query and recall (the best match distance feeds the adaptive threshold
        first), put them in force until the next scored tick, and issue the scored
        forecast."""
        self._gate_trend()
        fit = self.dyn.fit()
        recall = None
        if self.recaller is not None:
            obs = self.obs
            query = self.recaller.query(fit, self.dyn.state(fit), obs.embedding, obs.history)
            recall = self.recaller.recall(query, n - 1, observe=True)
            if self.recorder is not None:
                self.recorder.remember(fit, query.signature)
        self.in_force.take(n, fit, recall)
        horizon, obs = self.settings.episode_horizon, self.obs
        issued, spread, tracks, available = self.issuer.combine(horizon, recall)
        assert obs.ref_scale is not None
        self._open(n - 1, issued, spread, tracks, available, obs.ref_scale)
        self.issuer.keep(n, horizon, issued, spread)  # for this tick's reads

    def _gate_trend(self) -> None:
        """Before a fit: the trend gate reads the operator's span of observations."""
        if self.dyn.trend_gate is not None:
            history = self.obs.history
            span = self.settings.window + self.settings.delays - 1
            self.dyn.gate_trend(history.last(min(history.count, span)))

    def catch_up(self) -> None:
        """Make and file the episodes of every observation so far (see `flush`)."""
        if self.is_fitted:
            with single_threaded():
                self.flush(upto=self.stream.n - 1)

    def flush(self, upto: int) -> None:
        """Bring episodes up to date, in batches.

        Make the episodes of origins up to ``upto``, score pending forecasts against
        every observation since they were last scored, and file episodes whose
        continuation is complete into memory. This runs at every scored step and
        refit, and before any read. The result does not depend on when it runs:
        each piece is a function of the state at its origin, and every update lands
        in the order the observations came.
        """
        ready_at = self.dyn.ready_at
        if ready_at is None:
            return
        n, obs, dyn = self.stream.n, self.obs, self.dyn
        if self.recorder is not None:
            self.recorder.make(upto, n, ready_at, obs, dyn)
        gate = self.recaller.gate if self.recaller is not None else None
        self.scorer.advance(n - 1, obs.history, self.combiner.learner, gate, self.calibrator)
        if self.recorder is not None:
            self.recorder.file(n, obs, dyn)

    def _open(
        self,
        origin: int,
        issued: np.ndarray,
        spread: np.ndarray,
        tracks: np.ndarray,
        available: np.ndarray,
        ref_scale: np.ndarray,
        graded_only: bool = False,
    ) -> None:
        """Open the score of a forecast issued at ``origin``, with its interval
        (``graded_only``: for the intervals alone, see `ForecastScorer`)."""
        horizon = self.settings.episode_horizon
        scale = self.issuer.interval_scale()
        half = self.calibrator.half_width(self.settings.level, spread, horizon, scale)
        self.scorer.open(
            PendingScore(
                origin=origin,
                tracks=tracks,
                available=available,
                issued=issued,
                spread=spread,
                lower=issued - half,
                upper=issued + half,
                # Standardisations are replaced, never changed in place: no copy is needed.
                ref_scale=ref_scale,
                local_scale=scale,
                realised=np.zeros(issued.shape, dtype=issued.dtype),
                graded_only=graded_only,
            )
        )

    # ------------------------------------------------------------------ before the first fit
    def _score_early(self, n: int) -> None:
        """Before the operator's first fit, score the classical experts at block boundaries.

        So their weights are learned, and forecasts are theirs rather than the last
        value, while the operator still waits for its window (short series). With
        ``early_grading``, the steps in between are graded too, for the intervals alone
        (cheap before a fit: a short series has too few scored forecasts otherwise).
        """
        config = self.settings.config
        if self.bank is None:
            return
        graded_only = n % config.stride != 0
        if graded_only and (not config.early_grading or n < 2):
            return
        obs, horizon = self.obs, self.settings.episode_horizon
        if not graded_only:  # (grading lands at scored ticks alone, as it did before)
            self.scorer.advance(n - 1, obs.history, self.combiner.learner, None, self.calibrator)
        issued, spread, tracks, available = self.issuer.combine_early(horizon)
        # No reference standardisation yet: errors are in units of the running scale.
        scale = obs.scaler.current()[1]
        self._open(n - 1, issued, spread, tracks, available, scale, graded_only)

    # ------------------------------------------------------------------ forecasting
    def forecast(
        self, horizon: int, level: float
    ) -> tuple[np.ndarray, np.ndarray, KoopmanFit, Recall | None]:
        """``(mean, half-width, fit, recall)`` of the forecast ``horizon`` steps ahead."""
        mean, spread = self._forecast(horizon)
        half = self.calibrator.half_width(level, spread, horizon, self.issuer.interval_scale())
        fit = self.in_force.fit
        assert fit is not None
        return mean, half, fit, self.issuer.recall_now()

    def point_forecast(self, horizon: int) -> np.ndarray:
        """The mean of `forecast` alone, ``(horizon, c)``."""
        return self._forecast(horizon)[0]

    def _forecast(self, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, spread)`` (read-only arrays, cached per tick and horizon)."""
        # A forecast reads the episodes that can be filed (origins a full episode horizon
        # old) and the scores. Younger episodes cannot be recalled yet, so they are left
        # to the next batch, which makes them the same (see `flush`): making one at every
        # forecast cost more than the rest of the flush.
        n = self.stream.n
        self.flush(upto=n - 1 - self.settings.episode_horizon)
        return self.issuer.mean_spread(horizon)
