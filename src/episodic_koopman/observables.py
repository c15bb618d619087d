"""The observables component: standardisation, raw history, delay embedding and lifting."""

from __future__ import annotations

from typing import Any

import numpy as np

from .components import State, prefixed, unprefixed
from .embedding import DelayEmbedding, History, IdentityLifting, Lifting, Standardizer
from .operator import WindowedDMD


class Observables:
    """What the operator sees of a stream of ``n_channels`` channels.

    Observations update a running standardisation and a raw history. The
    *reference* standardisation (``ref_mean``, ``ref_scale``) is the one the
    operator's snapshots are in; it changes only when `anchor` is called (at the
    first snapshot and at every exact refit).
    """

    def __init__(
        self,
        delays: int,
        n_channels: int,
        history_length: int,
        lifting: Lifting,
        history_margin: int | None = None,
    ) -> None:
        n_inputs = delays * n_channels
        self.lifting = lifting
        self.n_features = lifting.n_features(n_inputs)
        lifting.setup(n_inputs)
        self._identity = isinstance(lifting, IdentityLifting)
        self.embedding = DelayEmbedding(delays, n_channels)
        self.scaler = Standardizer(n_channels)
        self.history = History(history_length, n_channels, history_margin)
        self.ref_mean: np.ndarray | None = None
        self.ref_scale: np.ndarray | None = None

    @property
    def delays(self) -> int:
        return self.embedding.delays

    def observe(self, values: np.ndarray) -> None:
        self.scaler.update(values)
        self.history.append(values)

    def anchor(self) -> None:
        """Adopt the running standardisation as the reference."""
        self.ref_mean, self.ref_scale = self.scaler.current()

    def lift(
        self,
        window: np.ndarray,
        mean: np.ndarray | None = None,
        scale: np.ndarray | None = None,
    ) -> np.ndarray:
        """Observables of a raw delay window (in the reference standardisation by default)."""
        mean = self.ref_mean if mean is None else mean
        scale = self.ref_scale if scale is None else scale
        return self.lifting.transform(self.embedding.snapshot(window, mean, scale))

    def newest(self) -> np.ndarray:
        """Observables of the newest delay window."""
        return self.lift(self.history.last(self.delays))

    def push_newest(self, dmd: WindowedDMD) -> None:
        """Push the newest delay window's observables (`newest`) into ``dmd``: the delay
        vector is written straight into the operator's window under the identity lifting."""
        if self._identity:
            rows = self.history.last(self.embedding.delays)
            dmd.push_standardized(rows, self.ref_mean, self.ref_scale)  # type: ignore[arg-type]
        else:
            dmd.push(self.newest())

    def snapshots(self, n_snapshots: int) -> np.ndarray:
        """Observables of the newest ``n_snapshots`` delay windows, oldest first."""
        raw = self.history.last(n_snapshots + self.delays - 1)
        snaps = self.embedding.snapshots(raw, self.ref_mean, self.ref_scale)
        return self.lifting.transform(snaps)

    def to_raw(self, z: np.ndarray) -> np.ndarray:
        """Standardised values back in the series' units."""
        return z * self.ref_scale + self.ref_mean

    def get_state(self) -> State:
        arrays = {"scaler": self.scaler.get_state()}
        arrays |= prefixed("history", self.history.get_state())
        arrays |= prefixed("lifting", self.lifting.get_state())
        anchored = self.ref_mean is not None
        if anchored:
            arrays["ref_mean"], arrays["ref_scale"] = self.ref_mean, self.ref_scale
        return {"anchored": anchored}, arrays

    def set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.scaler.set_state(arrays["scaler"])
        self.history.set_state(unprefixed("history", arrays))
        self.lifting.set_state(unprefixed("lifting", arrays))
        if meta["anchored"]:
            self.ref_mean = np.array(arrays["ref_mean"], dtype=np.float64)
            self.ref_scale = np.array(arrays["ref_scale"], dtype=np.float64)
