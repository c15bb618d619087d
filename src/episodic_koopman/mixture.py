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
and ``"mlpoly"`` have one; they use regrets rather than losses.
At each scored step ahead, expert ``e``'s instantaneous regret is
``r_e = loss(issued) - loss_e``: the issued (mixed) forecast's absolute error less
the expert's, in units of the series' scale, averaged over channels. The absolute
loss is convex, so the issued loss is at most the weighted mean of the experts'
losses, which is what the rules' guarantees need.

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

MIXTURE_RULES = ("boa", "mlpoly", "hedge")
#: The hedge rule's truncation of each scored error, in units of the series' scale.
LOSS_CAP = 3.0
#: The weight of the hedge rule's prior guess of an expert's loss, in scored forecasts.
#: Chosen on the first halves of ``make bench-accuracy`` among 0 (a guess for experts
#: with no record only), 1, 2 and 4: airline's MAE 17.8 -> 15.7, 16.2, 16.4, 16.9, and
#: water flow's 0.961 -> 0.975, 0.975, 0.970, 0.966 (one forecast: a seasonal AR that
#: had just come in scored once at 0.011, and its guess took every step ahead).
PRIOR_FORECASTS = 4.0
#: A prior weight below this (in units of the record's full mass, 1) counts as none.
_NEGLIGIBLE_PRIOR = 1e-9


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
        self._loss = np.zeros((len(names), horizon))
        self._mass = np.zeros((len(names), horizon))  # bias correction of the EW mean
        self._fast = np.zeros((len(names), 2))  # fast EW one-step loss, and its mass
        self._regret = np.zeros((len(names), horizon))  # ML-Poly: (discounted) regrets
        self._second = np.zeros((len(names), horizon))  # and their squared increments
        self._boa = np.zeros((len(names), horizon))  # BOA: sum of eta r - (eta r)^2
        self._range = np.zeros((len(names), horizon))  # largest |regret increment| seen
        # Weights per availability pattern: they change only when losses do, while
        # every forecast in between asks for them again.
        self._weights: dict[bytes, np.ndarray] = {}
        self._all_scored = False  # every expert has mass at every step (derived, see `losses`)
        self._prior_gone = False  # every prior weight is negligible (derived, see below)

    @property
    def needs_regrets(self) -> bool:
        """Whether `update_many` reads regrets (the hedge rule keeps loss averages only)."""
        return self.rule != "hedge"

    def losses(self) -> np.ndarray:
        """Current loss estimates ``(n_experts, horizon)``; NaN where never scored."""
        # The same quotients where there is mass, without dividing by zero elsewhere (and
        # so without an errstate context, which costs more than the division).
        if not self._all_scored:  # masses only grow: once all positive, they stay so
            scored = self._mass > 0
            if not scored.all():
                return np.where(scored, self._loss / np.where(scored, self._mass, 1.0), np.nan)
            self._all_scored = True
        return self._loss / self._mass

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
        self._weights.clear()
        a = self.decay
        if self.rule != "hedge":
            if regrets is None:
                raise ValueError(f"the {self.rule} rule needs the experts' regrets")
            self._update_regrets(steps, np.where(available, regrets, 0.0).T)
            return  # the loss averages below serve the hedge rule only
        if self.loss_cap is not None:  # bounded: one shock cannot rule the weights
            losses = np.minimum(losses, self.loss_cap)
        cols = _columns(steps)
        old_loss, old_mass = self._loss[:, cols], self._mass[:, cols]
        new_loss, new_mass = (1 - a) * old_loss + a * losses.T, (1 - a) * old_mass + a
        if not available.all():  # where every expert was scored, nothing to keep
            mask = available.T
            new_loss = np.where(mask, new_loss, old_loss)
            new_mass = np.where(mask, new_mass, old_mass)
        self._loss[:, cols], self._mass[:, cols] = new_loss, new_mass
        if self.fast_decay <= 0:
            return
        first = np.flatnonzero(steps == 0)
        if first.size:
            f = self.fast_decay
            avail, loss = available[first[0]], losses[first[0]]
            self._fast[avail, 0] = (1 - f) * self._fast[avail, 0] + f * loss[avail]
            self._fast[avail, 1] = (1 - f) * self._fast[avail, 1] + f

    def _update_regrets(self, steps: np.ndarray, r: np.ndarray) -> None:
        """Discount and add regret increments ``r (E, P)`` at the columns ``steps``."""
        cols = _columns(steps)
        keep = 1.0 - self.decay
        second = keep * self._second[:, cols] + r * r
        self._regret[:, cols] = keep * self._regret[:, cols] + r
        self._second[:, cols] = second
        if self.rule == "boa":  # learning rates from the ranges and variances so far
            ranges = np.maximum(self._range[:, cols], np.abs(r))
            self._range[:, cols] = ranges
            eta = _boa_rates(ranges, second, len(self.names))
            self._boa[:, cols] = keep * self._boa[:, cols] + eta * r - (eta * r) ** 2

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
        if self.rule == "mlpoly":
            return self._mlpoly_weights(np.asarray(available, dtype=bool))
        if self.rule == "boa":
            return self._boa_weights(np.asarray(available, dtype=bool))
        if self._all_scored and self._prior_gone and self.fast_decay <= 0 and available.all():
            return _full_record_weights(self._loss / self._mass, self.eta)
        losses = self.losses()
        if self.fast_decay > 0:  # else the factor is 1: skip the call and the product
            losses = losses * self.regime_factor()[:, None]
        avail = available[:, None]
        if self._all_scored and self._prior_gone:
            # Masses only grow towards 1: once every prior weight is negligible, each
            # update keeps it so, (1 - a) times smaller up to a rounding step of 1e-16.
            complete, without_prior = bool(available.any()), True
        else:
            unscored = np.isnan(losses)
            prior = PRIOR_FORECASTS * self.decay * (1.0 - self._mass)
            # A record's mass tends to 1 but may settle a rounding step below it: a prior
            # that weighs next to nothing is dropped, so a full record takes the fast path.
            prior[prior < _NEGLIGIBLE_PRIOR] = 0.0
            self._prior_gone = not prior.any()
            # Once every available expert has a full track record at every step, the prior
            # below weighs nothing: the same floats, without its calls.
            complete = not unscored.any() and available.any()
            without_prior = not np.any(prior[available] > 0)
        if complete and without_prior and available.all():  # no masking either
            best = np.minimum.reduce(losses, axis=0)
            logits = -self.eta * (losses / np.maximum(best, 1e-12) - 1.0)
            return _softmax_columns(logits)
        if complete and without_prior:
            filled = losses
        else:
            filled, n_known = self._shrunk(losses, available, prior)
        best = np.minimum.reduce(np.where(avail, filled, np.inf), axis=0)
        relative = filled / np.maximum(best, 1e-12)[None, :]
        logits = np.where(avail, -self.eta * (relative - 1.0), -np.inf)
        if not complete:  # no expert scored at a step: uniform there
            logits = np.where(n_known[None, :] > 0, logits, np.where(avail, 0.0, -np.inf))
        return _softmax_columns(logits)

    def _shrunk(
        self, losses: np.ndarray, available: np.ndarray, prior: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Loss estimates shrunk towards the prior guess (see the module), and the count
        of available scored experts per step.

        ``losses`` are the record's means (NaN where never scored); ``prior`` the
        prior's weight per expert and step. Step by step, since each step's guess is
        the previous step's estimate relative to the mean there.
        """
        known = available[:, None] & ~np.isnan(losses)
        n_known = known.sum(axis=0)
        mean_known = np.where(known, losses, 0.0).sum(axis=0) / np.maximum(n_known, 1)
        record = np.where(known, losses, 0.0)
        mass = np.where(known, self._mass, 0.0)
        # What does not depend on the guess, for every step at once, as contiguous rows
        # (the same floats as step by step, in a third of the calls).
        weighted = (mass * record).T.copy()
        total = np.maximum(mass + prior, 1e-300).T.copy()
        no_record = (mass <= 0).T.copy()
        prior_rows = prior.T.copy()
        filled = np.empty((losses.shape[1], len(self.names)))
        relative = np.ones(len(self.names))  # each expert's estimated loss / the mean
        for h, mean in enumerate(mean_known.tolist()):
            guess = relative * mean
            row = filled[h]
            np.divide(weighted[h] + prior_rows[h] * guess, total[h], out=row)
            np.copyto(row, guess, where=no_record[h])
            if mean > 0:
                np.divide(row, mean, out=relative, where=available)
        return np.ascontiguousarray(filled.T), n_known  # C order: sums add up as before

    def _mlpoly_weights(self, available: np.ndarray) -> np.ndarray:
        """ML-Poly: ``w_e`` proportional to ``max(R_e, 0) / (1 + V_e)`` among the awake."""
        positive = np.where(available[:, None], np.maximum(self._regret, 0.0), 0.0)
        scores = positive / (1.0 + self._second)
        total = scores.sum(axis=0, keepdims=True)
        uniform = np.broadcast_to(available[:, None] / max(available.sum(), 1), scores.shape)
        out = np.where(total > 0, scores / np.where(total > 0, total, 1.0), uniform)
        out.flags.writeable = False
        return out

    def _boa_weights(self, available: np.ndarray) -> np.ndarray:
        """BOA: ``w_e`` proportional to ``eta_e exp(sum of eta r - (eta r)^2)`` among the awake."""
        eta = _boa_rates(self._range, self._second, len(self.names))
        logits = np.where(available[:, None], self._boa + np.log(eta), -np.inf)
        top = logits.max(axis=0, keepdims=True)
        w = np.exp(logits - np.where(np.isfinite(top), top, 0.0))
        out = w / w.sum(axis=0, keepdims=True)
        out.flags.writeable = False
        return out

    def get_state(self) -> dict[str, np.ndarray]:
        return {
            "loss": self._loss.copy(),
            "mass": self._mass.copy(),
            "fast": self._fast.copy(),
            "regret": self._regret.copy(),
            "second": self._second.copy(),
            "boa": self._boa.copy(),
            "range": self._range.copy(),
        }

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self._loss = np.array(state["loss"], dtype=np.float64)
        self._mass = np.array(state["mass"], dtype=np.float64)
        self._fast = np.array(state["fast"], dtype=np.float64)
        self._regret = np.array(state["regret"], dtype=np.float64)
        self._second = np.array(state["second"], dtype=np.float64)
        self._boa = np.array(state["boa"], dtype=np.float64)
        self._range = np.array(state["range"], dtype=np.float64)
        self._weights.clear()
        self._all_scored = self._prior_gone = False


def _full_record_weights(losses: np.ndarray, eta: float) -> np.ndarray:
    """The hedge weights of experts all available with full records and no prior, from
    their losses (overwritten): the operations of `_horizon_weights`' general path and
    `_softmax_columns`, in place (every forecast after a score asks for them)."""
    best = np.minimum.reduce(losses, axis=0)
    np.maximum(best, 1e-12, out=best)
    np.divide(losses, best, out=losses)
    np.subtract(losses, 1.0, out=losses)
    np.multiply(-eta, losses, out=losses)  # the logits
    np.subtract(losses, np.maximum.reduce(losses, axis=0, keepdims=True), out=losses)
    np.exp(losses, out=losses)
    np.divide(losses, np.add.reduce(losses, axis=0, keepdims=True), out=losses)
    losses.flags.writeable = False
    return losses


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


def _softmax_columns(logits: np.ndarray) -> np.ndarray:
    """Read-only softmax of each column (the reductions without their method wrappers)."""
    w = np.exp(logits - np.maximum.reduce(logits, axis=0, keepdims=True))
    out = w / np.add.reduce(w, axis=0, keepdims=True)
    out.flags.writeable = False
    return out


def _boa_rates(ranges: np.ndarray, second: np.ndarray, n_experts: int) -> np.ndarray:
    """BOA's learning rates ``min(1 / (2 E), sqrt(log K / V))`` (1 before any regret)."""
    log_k = np.log(max(n_experts, 2))
    tiny = 1e-300  # a zero range means no regret yet (and then the rate is 1)
    adaptive = np.sqrt(log_k / np.maximum(second, tiny))
    return np.where(ranges > 0, np.minimum(0.5 / np.maximum(ranges, tiny), adaptive), 1.0)
