"""The forecast scorer: forecasts issued at scored origins, graded as their outcomes arrive."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .components import State
from .drift_gate import DriftGate
from .embedding import History
from .intervals import ConformalCalibrator
from .mixture import ExpertMixture

_SCORE_FIELDS = (
    "tracks",
    "available",
    "issued",
    "spread",
    "lower",
    "upper",
    "ref_scale",
    "local_scale",
    "realised",
)


@dataclass
class PendingScore:
    """A scored forecast (every expert's, and the issued one) awaiting its outcome."""

    origin: int
    tracks: np.ndarray  # (n_experts, H, c)
    available: np.ndarray  # (n_experts,) which experts could forecast then
    issued: np.ndarray
    spread: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    ref_scale: np.ndarray
    local_scale: np.ndarray  # (c,) the series' local scale at the origin (see intervals)
    realised: np.ndarray
    n_realised: int = 0
    # Graded for the intervals alone: it teaches neither the mixture nor the drift gate.
    graded_only: bool = False


class ForecastScorer:
    """Grades issued forecasts step by step as observations arrive.

    Each realised step updates the mixture's per-step losses (in units of the
    series' scale at the origin), the first step feeds the drift gate, and a
    forecast whose ``horizon`` has fully passed updates the conformal calibrator.
    A ``graded_only`` forecast updates the calibrator alone.
    Updates land in the order the observations came, whenever `advance` runs.
    """

    def __init__(self, horizon: int) -> None:
        self.horizon = horizon
        self.pending: list[PendingScore] = []

    def open(self, score: PendingScore) -> None:
        self.pending.append(score)

    def advance(
        self,
        newest: int,
        history: History,
        mixture: ExpertMixture | None,
        gate: DriftGate | None,
        calibrator: ConformalCalibrator,
    ) -> None:
        """Score pending forecasts against the observations up to index ``newest``.

        ``mixture`` is the one to teach (``None`` when there is nothing to weigh).
        """
        horizon = self.horizon
        # Mixture updates of distinct steps ahead touch distinct columns, so a run of
        # them lands in one call, exactly as one by one; a repeated step starts a new run.
        steps: list[np.ndarray] = []
        losses: list[np.ndarray] = []
        regrets: list[np.ndarray] | None = None
        masks: list[np.ndarray] = []
        taken = 0  # the steps ahead of the run so far, as bits
        if mixture is not None and mixture.needs_regrets:
            regrets = []
        for score in self.pending:  # oldest first: each loss lands in time order
            k0, k1 = score.n_realised, min(horizon, newest - score.origin)
            if k1 <= k0:
                continue
            rows = history.last(newest - score.origin - k0)[: k1 - k0]
            score.realised[k0:k1] = rows
            if mixture is not None and not score.graded_only:
                span = (1 << k1) - (1 << k0)  # bits k0..k1-1
                if taken & span:
                    _update_mixture(mixture, steps, losses, regrets, masks)
                    taken = 0
                taken |= span
                errors = np.abs(rows - score.tracks[:, k0:k1]) / score.ref_scale
                c = errors.shape[2]
                # errors.mean(axis=2) as NumPy computes it (sum, then divide); over one
                # channel that is the errors themselves, exactly.
                loss = errors[:, :, 0] if c == 1 else np.add.reduce(errors, axis=2) / c
                steps.append(np.arange(k0, k1))
                losses.append(loss.T)
                masks.append(score.available[None, :].repeat(k1 - k0, axis=0))
                if regrets is not None:
                    # Regret against each expert: the issued forecast's loss less the expert's.
                    issued = np.abs(rows - score.issued[k0:k1]) / score.ref_scale
                    issued_loss = np.add.reduce(issued, axis=1) / c
                    regrets.append(issued_loss[:, None] - losses[-1])
            if k0 == 0 and gate is not None and not score.graded_only:
                error = float((np.abs(rows[0] - score.issued[0]) / score.ref_scale).mean())
                gate.update(error, at=score.origin + 1)
            score.n_realised = k1
        if mixture is not None:
            _update_mixture(mixture, steps, losses, regrets, masks)
        while self.pending and self.pending[0].n_realised >= horizon:
            score = self.pending.pop(0)
            calibrator.update(
                score.realised - score.issued,
                score.spread,
                score.local_scale,
                score.lower,
                score.upper,
                score.realised,
                graded_only=score.graded_only,
            )

    def get_state(self) -> State:
        scores = self.pending
        meta: dict[str, Any] = {"n_pending": len(scores)}
        if not scores:
            return meta, {}
        arrays = {name: np.stack([getattr(s, name) for s in scores]) for name in _SCORE_FIELDS}
        arrays["counts"] = np.array([[s.origin, s.n_realised] for s in scores], dtype=np.int64)
        if any(s.graded_only for s in scores):  # absent: none (as saved before there were any)
            arrays["graded_only"] = np.array([s.graded_only for s in scores], dtype=np.bool_)
        return meta, arrays

    def set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.pending = []
        graded_only = arrays.get("graded_only")
        for i in range(int(meta["n_pending"])):
            origin, n_realised = (int(x) for x in arrays["counts"][i])
            fields = {name: np.array(arrays[name][i]) for name in _SCORE_FIELDS}
            only = graded_only is not None and bool(graded_only[i])
            self.pending.append(
                PendingScore(origin=origin, n_realised=n_realised, graded_only=only, **fields)
            )


def _update_mixture(
    mixture: ExpertMixture,
    steps: list[np.ndarray],
    losses: list[np.ndarray],
    regrets: list[np.ndarray] | None,
    masks: list[np.ndarray],
) -> None:
    """Apply (and empty) a run of updates of distinct steps ahead as one `update_many`.

    ``regrets`` is ``None`` for a rule that does not read them.
    """
    if not steps:
        return
    if len(steps) == 1:
        more = None if regrets is None else regrets[0]
        mixture.update_many(steps[0], losses[0], masks[0], more)
    else:
        mixture.update_many(
            np.concatenate(steps),
            np.concatenate(losses),
            np.concatenate(masks),
            None if regrets is None else np.concatenate(regrets),
        )
    for pieces in (steps, losses, regrets, masks):
        if pieces is not None:
            pieces.clear()
