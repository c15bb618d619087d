"""Online aggregation of expert forecasts, one set of weights per step ahead.

The forecaster has several ways to forecast: the plain Koopman propagation,
corrections from memory (analogs under different alignments, residuals,
operator transfer), and the classical experts (`episodic_koopman.experts`).
Which is best depends on the series, the regime and the step ahead. For
example, the last-value-anchored analog wins one week ahead on influenza, and
plain propagation wins in steady state. So each expert's absolute error
(in units of the series' scale) is tracked per step ahead, as an exponentially
weighted mean with bias correction, and the experts are weighted by::

    w_e,h  proportional to  exp(-eta * (L_e,h / min_e L_e,h - 1))

This is exponentially weighted averaging (Hedge) on *relative* losses, so
``eta`` needs no units (rule ``"hedge"``). Only experts that could forecast at an
origin are scored there, and unavailable experts get no weight.

A young track record is shrunk towards a prior guess (see `PRIOR_FORECASTS`):
``L_e,h = (S_e,h + p g_e,h) / (M_e,h + p)``, where ``S`` and ``M`` are the
discounted sums of losses and of their weights, and the prior is a pseudo-record
of weight ``p = PRIOR_FORECASTS * decay * (1 - M)``, discounted like the real
ones (so it fades as the record fills, and is gone from a full one). The guess
``g_e,h`` is the expert's estimated loss one step earlier relative to the mean of
the scored experts there, times that mean at step ``h`` (the mean itself at the
first step): an expert's skill at short range is known first, ``h`` steps after
an origin, and it is the best guess of its skill further ahead. An expert with no
record gets the guess alone. Without the prior, one lucky first score won an
expert every weight: on airline the seasonal AR entered with no record at most
steps (the mean loss of the others), so it took many rounds to win, while after
the automatic embedding's rebuild at 96 observations the plain forecast's first
one-step error (0.1 against 0.4) gave it 0.65 of the weight within 4 steps.

Each scored error enters the hedge rule's averages truncated at ``loss_cap``
(`LOSS_CAP` scale units by default). One shock would otherwise rule the weights
for hundreds of steps: when a sensor drops to a quarter of its level for a few
hours (river's water flow), every expert scored across the drop has an error of
~100 scale units against ~0.1 usually, and an expert fitted on the drop (a local
AR before the envelope applies) can be off by 1e12. Those errors stay the bulk of
the averages long after the series has recovered, so they decide the weights:
on the first half of water flow, the experts that are best again just after the
outage (last value, damped trend) were outweighed by experts that missed the
drop by less or were not scored across it. Truncated, a round where every
expert fails is a tie, and it costs no expert more than ``loss_cap``. (Bounded
losses are what Hedge's regret analysis assumes, though this rule's relative
losses still carry no formal bound.) The cap, 3, was chosen on the first halves
of ``make bench-accuracy`` among 0.5 to 10: water flow's MAE 1.32 -> 0.96, the
other datasets within 0.2%, and memory's gain on bike sharing kept (2 was 0.2%
more accurate on the geometric mean but cost bike sharing a quarter point of
ek / ek-nomem; 1 and below cost airline 5% and more). Series without outliers
barely change: their errors stay under three standard deviations of the series.

Rule ``"hedge"`` is the default: on every dataset of ``make bench-accuracy`` it
was as accurate as BOA and ML-Poly or better (BOA's error was 20-65% higher on
the recurring-regime sets, where the memory expert must win quickly), but its
relative losses and fixed ``eta`` carry no formal regret bound. Rules ``"boa"``
and ``"mlpoly"`` have one; they use regrets rather than losses
(`episodic_koopman.regret_rules`). The hedge rule's arithmetic runs as compiled
loops (`episodic_koopman.hedge_rule`).

>>> import numpy as np
>>> mix = ExpertMixture(["plain", "memory"], horizon=1, decay=0.5, eta=4.0)
>>> for _ in range(5):
...     mix.update(0, np.array([1.0, 0.5]), np.array([True, True]))
>>> w = mix.weights(np.array([True, True]), steps=1)
>>> bool(w[1, 0] > 0.95)
True
"""

from __future__ import annotations

import numpy as np

from .hedge_rule import hedge_weights, update_losses
from .regret_rules import RegretState, boa_weights, mlpoly_weights, update_regrets
from .state_checks import state_array

MIXTURE_RULES = ("boa", "mlpoly", "hedge")
#: The hedge rule's truncation of each scored error, in units of the series' scale.
LOSS_CAP = 3.0
#: The weight of the hedge rule's prior guess of an expert's loss, in scored forecasts.
#: Chosen on the first halves of ``make bench-accuracy`` among 0 (a guess for experts
#: with no record only), 1, 2 and 4: airline's MAE 17.8 -> 15.7, 16.2, 16.4, 16.9, and
#: water flow's 0.961 -> 0.975, 0.975, 0.970, 0.966 (one forecast: a seasonal AR that
#: had just come in scored once at 0.011, and its guess took every step ahead).
PRIOR_FORECASTS = 4.0
_REGRET_ARRAYS = ("regret", "second", "boa", "range")


class ExpertMixture:
    """Per-step-ahead online aggregation weights over named experts."""

    def __init__(
        self,
        names: list[str],
        horizon: int,
        decay: float,
        eta: float,
        fast_decay: float = 0.0,
        rule: str = "hedge",
        loss_cap: float | None = LOSS_CAP,
    ) -> None:
        if rule not in MIXTURE_RULES:
            raise ValueError(f"rule must be one of {MIXTURE_RULES}, got {rule!r}")
        if loss_cap is not None and not loss_cap > 0:
            raise ValueError(f"loss_cap must be positive or None, got {loss_cap!r}")
        self.loss_cap = loss_cap
        self.rule = rule
        self.names = list(names)
        self.horizon = horizon
        self.decay = decay
        self.eta = eta
        self.fast_decay = fast_decay
        shape = (len(names), horizon)
        self._loss = np.zeros(shape)
        self._mass = np.zeros(shape)  # bias correction of the EW mean
        self._fast = np.zeros((len(names), 2))  # fast EW one-step loss, and its mass
        self._regrets = RegretState(*(np.zeros(shape) for _ in _REGRET_ARRAYS))
        self._no_factor = np.ones(len(names))  # the regime factor without fast losses
        # Weights per availability pattern: they change only when losses do, while
        # every forecast in between asks for them again.
        self._weights: dict[bytes, np.ndarray] = {}
        self._all_scored = False  # every expert has mass at every step (derived)
        self._prior_gone = False  # every prior weight is negligible (derived, see hedge_rule)

    @property
    def needs_regrets(self) -> bool:
        """Whether `update_many` reads regrets (the hedge rule keeps loss averages only)."""
        return self.rule != "hedge"

    def losses(self) -> np.ndarray:
        """Current loss estimates ``(n_experts, horizon)``; NaN where never scored."""
        # The same quotients where there is mass, without dividing by zero elsewhere.
        scored = self._mass > 0
        return np.where(scored, self._loss / np.where(scored, self._mass, 1.0), np.nan)

    def update(
        self,
        step: int,
        losses: np.ndarray,
        available: np.ndarray,
        regrets: np.ndarray | None = None,
    ) -> None:
        """Score step ``step`` (0-based) ahead for the experts that were available."""
        more = None if regrets is None else regrets[None, :]
        self.update_many(np.array([step]), losses[None, :], available[None, :], more)

    def update_many(
        self,
        steps: np.ndarray,
        losses: np.ndarray,
        available: np.ndarray,
        regrets: np.ndarray | None = None,
    ) -> None:
        """Score several forecasts at once: ``steps (P,)`` (distinct), ``losses (P, E)``.

        ``regrets (P, E)``: each expert's instantaneous regret (see the module); the
        ``"boa"`` and ``"mlpoly"`` rules need them (and keep no loss averages).
        """
        # The compiled updates index ``loss[e, step]`` without bounds checks.
        steps = np.asarray(steps)
        if steps.ndim != 1 or steps.dtype.kind not in "iu":
            raise ValueError(f"steps must be a 1-d integer array, got {steps.dtype} {steps.shape}")
        if steps.size and not (0 <= steps.min() and steps.max() < self.horizon):
            raise ValueError(f"steps must be in [0, {self.horizon}), got {steps.tolist()}")
        expected = (steps.size, len(self.names))
        for name, given in (("losses", losses), ("available", available), ("regrets", regrets)):
            if given is not None and np.shape(given) != expected:
                raise ValueError(f"{name} must have shape {expected}, got {np.shape(given)}")
        self._weights.clear()
        if self.rule != "hedge":
            if regrets is None:
                raise ValueError(f"the {self.rule} rule needs the experts' regrets")
            r = np.where(available, regrets, 0.0).T
            update_regrets(self._regrets, self.rule, self.decay, steps, r)
            return  # the loss averages serve the hedge rule only
        # Truncated at the cap: one shock cannot rule the weights.
        cap = np.inf if self.loss_cap is None else float(self.loss_cap)
        # Contiguous inputs: one compiled variant, whichever views the scorer hands over.
        update_losses(
            self._loss,
            self._mass,
            self._fast,
            np.ascontiguousarray(steps, dtype=np.int64),
            np.ascontiguousarray(losses, dtype=np.float64),
            np.ascontiguousarray(available, dtype=np.bool_),
            float(self.decay),
            cap,
            float(self.fast_decay),
        )

    def regime_factor(self) -> np.ndarray:
        """Each expert's recent one-step loss over its usual one-step loss (1 if unknown).

        One-step errors are known one step after each origin, long before those of
        later steps. A spike says that the regime has just changed for that expert,
        so all its losses are scaled by this factor (clipped to [0.2, 5]).
        """
        if self.fast_decay <= 0:
            return np.ones(len(self.names))
        usual = self.losses()[:, 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            recent = np.where(self._fast[:, 1] > 0, self._fast[:, 0] / self._fast[:, 1], np.nan)
            factor = recent / usual
        return np.clip(np.where(np.isfinite(factor), factor, 1.0), 0.2, 5.0)

    def weights(self, available: np.ndarray, steps: int) -> np.ndarray:
        """Weights ``(n_experts, steps)``; columns beyond the horizon repeat the last one."""
        if len(self.names) == 1:
            return np.ones((1, steps))
        pattern = np.asarray(available, dtype=bool).tobytes()
        out = self._weights.get(pattern)
        if out is None:
            out = self._weights[pattern] = self._horizon_weights(available)
        if steps <= self.horizon:
            return out[:, :steps]
        return np.concatenate([out, np.repeat(out[:, -1:], steps - self.horizon, axis=1)], axis=1)

    def _horizon_weights(self, available: np.ndarray) -> np.ndarray:
        """Read-only weights ``(n_experts, horizon)`` for one availability pattern."""
        available = np.asarray(available, dtype=np.bool_)
        if self.rule == "mlpoly":
            return mlpoly_weights(self._regrets, available)
        if self.rule == "boa":
            return boa_weights(self._regrets, available)
        use_factor = self.fast_decay > 0  # else the factor is 1: skip it
        factor = self.regime_factor() if use_factor else self._no_factor
        out, self._all_scored, self._prior_gone = hedge_weights(
            self._loss,
            self._mass,
            factor,
            use_factor,
            available,
            float(self.eta),
            PRIOR_FORECASTS * self.decay,
            self._prior_gone,
        )
        return out

    def get_state(self) -> dict[str, np.ndarray]:
        state = {"loss": self._loss.copy(), "mass": self._mass.copy(), "fast": self._fast.copy()}
        return state | {name: getattr(self._regrets, name).copy() for name in _REGRET_ARRAYS}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        # Checked against (experts, horizon) before any is assigned: the compiled
        # loops index them without bounds checks.
        shape = (len(self.names), self.horizon)

        def read(name: str, shape: tuple[int, ...] = shape) -> np.ndarray:
            return state_array("ExpertMixture", state, name, shape)

        loss, mass, fast = read("loss"), read("mass"), read("fast", (len(self.names), 2))
        regrets = RegretState(*(read(name) for name in _REGRET_ARRAYS))
        self._loss, self._mass, self._fast, self._regrets = loss, mass, fast, regrets
        self._weights.clear()
        self._all_scored = self._prior_gone = False
