"""Drift gating: recall opens for a while after river's detector flags drift."""

from __future__ import annotations

import random
from collections import deque
from typing import Any

import numpy as np
from river import drift

DRIFT_DETECTORS = ("page_hinkley", "kswin")


class DriftGate:
    """Open recall for ``span`` steps after river's detector flags drift in forecast errors.

    Drift is dated by the observation that revealed it, so when the errors are fed
    does not matter. Only detectors whose state can be saved exactly are offered:
    ``page_hinkley`` and ``kswin`` (ADWIN keeps its state in a compiled object).
    """

    def __init__(self, detector: str, span: int, seed: int = 0) -> None:
        if detector not in DRIFT_DETECTORS:
            raise ValueError(
                f"drift_gate must be one of {DRIFT_DETECTORS} or None, got {detector!r}"
            )
        self.detector_name = detector
        self.span = span
        self.seed = seed
        self.detector = self._new_detector()
        self.last_drift_at = -(10**18)  # closed until the first drift
        self.n_drifts = 0

    def _new_detector(self) -> Any:
        if self.detector_name == "page_hinkley":
            return drift.PageHinkley()
        return drift.KSWIN(seed=self.seed)

    def update(self, error: float, at: int) -> None:
        """Feed the one-step error observed at observation index ``at``."""
        self.detector.update(error)
        if self.detector.drift_detected:
            self.last_drift_at = at
            self.n_drifts += 1

    def is_open(self, now: int) -> bool:
        """Whether observation index ``now`` lies within ``span`` steps after a drift."""
        return now - self.last_drift_at <= self.span

    def get_state(self) -> dict[str, np.ndarray]:
        d = self.detector
        state = {
            "gate": np.array([self.last_drift_at, self.n_drifts], dtype=np.int64),
            "drift_detected": np.array(d._drift_detected),
        }
        if self.detector_name == "page_hinkley":
            state["ph"] = np.array(
                [
                    d._x_mean.n,
                    d._x_mean._mean,
                    d._sum_increase,
                    d._sum_decrease,
                    d._min_increase,
                    d._max_decrease,
                ]
            )
        else:
            version, internal, gauss = d._rng.getstate()
            state["kswin_window"] = np.array(d.window, dtype=np.float64)
            state["kswin_counts"] = np.array([d.n, d.p_value], dtype=np.float64)
            state["kswin_rng"] = np.array(internal, dtype=np.int64)
            state["kswin_rng_meta"] = np.array(
                [version, np.nan if gauss is None else gauss], dtype=np.float64
            )
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self.detector = self._new_detector()
        d = self.detector
        self.last_drift_at, self.n_drifts = (int(v) for v in state["gate"])
        d._drift_detected = bool(state["drift_detected"])
        if self.detector_name == "page_hinkley":
            n, mean, inc, dec, min_inc, max_dec = (float(v) for v in state["ph"])
            d._x_mean.n, d._x_mean._mean = n, mean
            d._sum_increase, d._sum_decrease = inc, dec
            d._min_increase, d._max_decrease = min_inc, max_dec
        else:
            d.window = deque((float(v) for v in state["kswin_window"]), maxlen=d.window_size)
            d.n, d.p_value = (float(v) for v in state["kswin_counts"])
            d.n = int(d.n)
            version, gauss = state["kswin_rng_meta"]
            rng = random.Random()
            rng.setstate(
                (
                    int(version),
                    tuple(int(v) for v in state["kswin_rng"]),
                    None if np.isnan(gauss) else float(gauss),
                )
            )
            d._rng = rng
