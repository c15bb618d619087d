"""The forecast scorer: forecasts issued at scored origins, graded as their outcomes arrive."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .components import State
from .drift_gate import DriftGate
from .embedding import History
from .intervals import ConformalCalibrator
from .jit import kernel
from .mixture import ExpertMixture
from .state_checks import Shape, state_array, state_count

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
        run: list[tuple[PendingScore, int, int]] = []
        taken = 0  # the steps ahead of the run so far, as bits
        for score in self.pending:  # oldest first: each loss lands in time order
            k0, k1 = score.n_realised, min(horizon, newest - score.origin)
            if k1 <= k0:
                continue
            rows = history.last(newest - score.origin - k0)[: k1 - k0]
            score.realised[k0:k1] = rows
            if mixture is not None and not score.graded_only:
                span = (1 << k1) - (1 << k0)  # bits k0..k1-1
                if taken & span:
                    _teach(mixture, run)
                    run, taken = [], 0
                taken |= span
                run.append((score, k0, k1))
            if k0 == 0 and gate is not None and not score.graded_only:
                error = float((np.abs(rows[0] - score.issued[0]) / score.ref_scale).mean())
                gate.update(error, at=score.origin + 1)
            score.n_realised = k1
        if mixture is not None:
            _teach(mixture, run)
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
        # All fields are checked against one another and the horizon before the pending
        # scores are replaced: the compiled grading indexes them by step and expert.
        owner, h = "ForecastScorer", self.horizon
        p = state_count(owner, "n_pending", meta["n_pending"])
        if p == 0:
            self.pending = []
            return
        tracks = state_array(owner, arrays, "tracks", (p, None, h, None))
        e, c = tracks.shape[1], tracks.shape[3]
        shapes: dict[str, tuple[Shape, type]] = {
            "available": ((p, e), np.bool_),
            "issued": ((p, h, c), np.float64),
            "spread": ((p, None, None), np.float64),  # broadcast to (h, c) where read
            "lower": ((p, h, c), np.float64),
            "upper": ((p, h, c), np.float64),
            "ref_scale": ((p, c), np.float64),
            "local_scale": ((p, c), np.float64),
            "realised": ((p, h, c), np.float64),
        }
        fields = {"tracks": tracks} | {
            name: state_array(owner, arrays, name, shape, dtype)
            for name, (shape, dtype) in shapes.items()
        }
        counts = state_array(owner, arrays, "counts", (p, 2), np.int64)
        for i in range(p):
            state_count(owner, f"counts[{i}] (origin)", counts[i, 0])
            state_count(owner, f"counts[{i}] (n_realised)", counts[i, 1], 0, h)
        graded_only = np.zeros(p, dtype=np.bool_)  # absent: none
        if "graded_only" in arrays:
            graded_only = state_array(owner, arrays, "graded_only", (p,), np.bool_)
        self.pending = [
            PendingScore(
                origin=int(counts[i, 0]),
                n_realised=int(counts[i, 1]),
                graded_only=bool(graded_only[i]),
                **{name: fields[name][i].copy() for name in _SCORE_FIELDS},
            )
            for i in range(p)
        ]


def _teach(mixture: ExpertMixture, run: list[tuple[PendingScore, int, int]]) -> None:
    """Teach ``mixture`` the realised steps ``k0..k1-1`` of each score of ``run`` (of
    distinct steps ahead) in one `update_many`.

    A step's loss is each expert's absolute error in units of the series' scale at
    the origin, averaged over channels; its regret (for rules that read them) the
    issued forecast's loss less the expert's.
    """
    if not run:
        return
    count = sum(k1 - k0 for _, k0, k1 in run)
    n_experts, _, c = run[0][0].tracks.shape
    steps = np.empty(count, dtype=np.int64)
    errors = np.empty((count, n_experts, c))
    issued_errors = np.empty((count, c))
    masks = np.empty((count, n_experts), dtype=np.bool_)
    offset = 0
    for score, k0, k1 in run:
        _grade(
            score.realised,
            score.tracks,
            score.issued,
            score.ref_scale,
            score.available,
            k0,
            k1,
            offset,
            steps,
            errors,
            issued_errors,
            masks,
        )
        offset += k1 - k0
    # errors.mean(axis=-1) as NumPy computes it (sum, then divide); over one channel
    # that is the errors themselves, exactly.
    losses = errors[:, :, 0] if c == 1 else np.add.reduce(errors, axis=2) / c
    regrets = None
    if mixture.needs_regrets:
        issued = issued_errors[:, 0] if c == 1 else np.add.reduce(issued_errors, axis=1) / c
        regrets = issued[:, None] - losses
    mixture.update_many(steps, losses, masks, regrets)


@kernel
def _grade(
    realised,
    tracks,
    issued,
    ref_scale,
    available,
    k0,
    k1,
    offset,
    steps,
    errors,
    issued_errors,
    masks,
):  # type: ignore[no-untyped-def]
    """Rows ``offset + i`` of the outputs, for realised step ``k0 + i < k1``: the step,
    each expert's and the issued forecast's absolute error per channel over
    ``ref_scale`` (as ``np.abs(realised - track) / ref_scale``), and which experts
    could forecast."""
    n_experts, _, c = tracks.shape
    for i in range(k1 - k0):
        k, row = k0 + i, offset + i
        steps[row] = k
        for e in range(n_experts):
            masks[row, e] = available[e]
            for j in range(c):
                errors[row, e, j] = abs(realised[k, j] - tracks[e, k, j]) / ref_scale[j]
        for j in range(c):
            issued_errors[row, j] = abs(realised[k, j] - issued[k, j]) / ref_scale[j]
