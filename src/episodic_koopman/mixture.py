"""Online aggregation of expert forecasts, one set of weights per step ahead.

The forecaster has several ways to forecast: the plain Koopman propagation,
and corrections from memory (analogs under different alignments, residuals,
operator transfer). Which is best depends on the series, the regime and the
step ahead. For example, the last-value-anchored analog wins one week ahead on
influenza, and plain propagation wins in steady state. So each expert's
absolute error (in units of the series' scale) is tracked per step ahead, as an
exponentially weighted mean with bias correction, and the experts are weighted by::

    w_e,h  proportional to  exp(-eta * (L_e,h / min_e L_e,h - 1))

This is exponentially weighted averaging (Hedge) on *relative* losses, so
``eta`` needs no units. Only experts that could forecast at an origin are scored
there, and unavailable experts get no weight. An expert with no track record
yet at some step is given the mean loss of the others.

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


class ExpertMixture:
    """Per-step-ahead Hedge weights over named experts."""

    def __init__(
        self, names: list[str], horizon: int, decay: float, eta: float, fast_decay: float = 0.0
    ) -> None:
        self.names = list(names)
        self.horizon = horizon
        self.decay = decay
        self.eta = eta
        self.fast_decay = fast_decay
        self._loss = np.zeros((len(names), horizon))
        self._mass = np.zeros((len(names), horizon))  # bias correction of the EW mean
        self._fast = np.zeros((len(names), 2))  # fast EW one-step loss, and its mass
        # Weights per availability pattern: they change only when losses do, while
        # every forecast in between asks for them again.
        self._weights: dict[bytes, np.ndarray] = {}

    def losses(self) -> np.ndarray:
        """Current loss estimates ``(n_experts, horizon)``; NaN where never scored."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self._mass > 0, self._loss / self._mass, np.nan)

    def update(self, step: int, losses: np.ndarray, available: np.ndarray) -> None:
        """Score step ``step`` (0-based) ahead for the experts that were available."""
        self.update_many(np.array([step]), losses[None, :], available[None, :])

    def update_many(self, steps: np.ndarray, losses: np.ndarray, available: np.ndarray) -> None:
        """Score several forecasts at once: ``steps (P,)`` (distinct), ``losses (P, E)``."""
        self._weights.clear()
        a = self.decay
        mask = available.T
        old_loss, old_mass = self._loss[:, steps], self._mass[:, steps]
        self._loss[:, steps] = np.where(mask, (1 - a) * old_loss + a * losses.T, old_loss)
        self._mass[:, steps] = np.where(mask, (1 - a) * old_mass + a, old_mass)
        first = np.flatnonzero(steps == 0)
        if first.size and self.fast_decay > 0:
            f = self.fast_decay
            avail, loss = available[first[0]], losses[first[0]]
            self._fast[avail, 0] = (1 - f) * self._fast[avail, 0] + f * loss[avail]
            self._fast[avail, 1] = (1 - f) * self._fast[avail, 1] + f

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
        losses = self.losses()
        if self.fast_decay > 0:  # else the factor is 1: skip the call and the product
            losses = losses * self.regime_factor()[:, None]
        avail = available[:, None]
        known = avail & ~np.isnan(losses)
        n_known = known.sum(axis=0)
        # An expert without a track record at some step gets the others' mean loss there.
        mean_known = np.where(known, losses, 0.0).sum(axis=0) / np.maximum(n_known, 1)
        filled = np.where(np.isnan(losses), mean_known[None, :], losses)
        best = np.where(avail, filled, np.inf).min(axis=0)
        relative = filled / np.maximum(best, 1e-12)[None, :]
        logits = np.where(avail, -self.eta * (relative - 1.0), -np.inf)
        logits = np.where(n_known[None, :] > 0, logits, np.where(avail, 0.0, -np.inf))
        w = np.exp(logits - logits.max(axis=0, keepdims=True))
        out = w / w.sum(axis=0, keepdims=True)
        out.flags.writeable = False
        return out

    def get_state(self) -> dict[str, np.ndarray]:
        return {"loss": self._loss.copy(), "mass": self._mass.copy(), "fast": self._fast.copy()}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self._loss = np.array(state["loss"], dtype=np.float64)
        self._mass = np.array(state["mass"], dtype=np.float64)
        self._fast = np.array(state["fast"], dtype=np.float64)
        self._weights.clear()
