"""The episode recorder: episodes made in batches, held until their continuation is observed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .components import State
from .dynamics import Dynamics
from .memory import EpisodeMemory
from .observables import Observables
from .operator import KoopmanFit, propagate_many
from .recall import KeyWeights, episode_keys, normalized_states
from .spectrum import Signature

_FIT_FIELDS = ("basis", "sigma", "reduced", "eigenvalues", "eigenvectors", "inverse_eigenvectors")


@dataclass
class PendingRecords:
    """Episodes made but not yet filed (their continuations are not all observed), oldest first.

    Every field has one row per episode, so how they were batched leaves no trace.
    Episodes are filed into memory by prefix as their continuations complete.
    """

    origins: np.ndarray  # (B,) observation indices
    window_starts: np.ndarray  # (B,)
    keys: np.ndarray  # (B, key dim)
    states: np.ndarray  # (B, state length)
    histories: np.ndarray  # (B, state_delays, c)
    forecasts: np.ndarray  # (B, horizon, c): the operator's forecast at each origin
    sig_eigenvalues: np.ndarray  # (B, max_rank)
    sig_modes: np.ndarray  # (B, max_rank, mode length)
    sig_ranks: np.ndarray  # (B,)
    ref_means: np.ndarray  # (B, c)
    ref_scales: np.ndarray  # (B, c)

    FIELDS = (
        "origins",
        "window_starts",
        "keys",
        "states",
        "histories",
        "forecasts",
        "sig_eigenvalues",
        "sig_modes",
        "sig_ranks",
        "ref_means",
        "ref_scales",
    )

    def __len__(self) -> int:
        return int(self.origins.shape[0])

    def rows(self, start: int, stop: int | None = None) -> PendingRecords:
        return PendingRecords(*(getattr(self, f)[start:stop] for f in self.FIELDS))

    def extend(self, other: PendingRecords) -> PendingRecords:
        if len(self) == 0:
            return other
        return PendingRecords(
            *(np.concatenate([getattr(self, f), getattr(other, f)]) for f in self.FIELDS)
        )


class EpisodeRecorder:
    """Makes an episode every ``stride`` steps and files it once ``horizon`` steps followed.

    Episodes between scored steps share the fit and signature of the last scored
    step (`remember`), so they can be made in one batch later (`make`).
    ``successor`` adds the fit in force when an episode is filed (for the
    ``transfer`` expert).
    """

    def __init__(
        self,
        memory: EpisodeMemory,
        key_weights: KeyWeights,
        horizon: int,
        stride: int,
        state_delays: int,
        successor: bool,
    ) -> None:
        self.memory = memory
        self.key_weights = key_weights
        self.horizon = horizon
        self.stride = stride
        self.state_delays = state_delays
        self.successor = successor
        self.source = 0
        self.pending: PendingRecords | None = None
        self.cursor: int | None = None  # next origin whose episode is still to make
        self.last_fit: KoopmanFit | None = None
        self.last_signature: Signature | None = None

    def remember(self, fit: KoopmanFit, signature: Signature) -> None:
        """The fit and signature of a scored step, used by the episodes until the next one."""
        self.last_fit, self.last_signature = fit, signature

    def make(self, upto: int, n: int, ready_at: int, obs: Observables, dyn: Dynamics) -> None:
        """Episodes for the due origins in ``[cursor, upto]``, with the latest scored fit."""
        start = self.cursor
        if start is None or upto < start:
            return
        first = start + (ready_at - 1 - start) % self.stride
        origins = np.arange(first, upto + 1, self.stride, dtype=np.int64)
        self.cursor = upto + 1
        if origins.size == 0:
            return
        fit, signature = self.last_fit, self.last_signature
        assert fit is not None and signature is not None
        assert obs.ref_mean is not None and obs.ref_scale is not None
        lag = (n - 1) - origins
        ds = self.state_delays
        rows = obs.history.last(int(lag[0]) + ds)
        windows = sliding_window_view(rows, (ds, rows.shape[1]))[:, 0]
        histories = windows[origins - origins[0]].copy()
        states = normalized_states(histories)
        snapshots = dyn.dmd.snapshots()
        forecasts = propagate_many(
            fit,
            snapshots[snapshots.shape[0] - 1 - lag],
            self.horizon,
            obs.embedding.readout,
            dyn.stabilize,
        )
        n_snapshots = np.minimum(dyn.dmd.n_pushed - lag, dyn.window + 1)
        count = origins.shape[0]
        made = PendingRecords(
            origins=origins,
            window_starts=origins + 2 - n_snapshots - obs.delays,
            keys=episode_keys(signature, states, self.key_weights),
            states=states,
            histories=histories,
            forecasts=forecasts * obs.ref_scale + obs.ref_mean,
            sig_eigenvalues=np.repeat(signature.eigenvalues[None], count, axis=0),
            sig_modes=np.repeat(signature.modes[None], count, axis=0),
            sig_ranks=np.full(count, signature.rank, dtype=np.int64),
            ref_means=np.repeat(obs.ref_mean[None], count, axis=0),
            ref_scales=np.repeat(obs.ref_scale[None], count, axis=0),
        )
        self.pending = made if self.pending is None else self.pending.extend(made)

    def file(self, n: int, obs: Observables, dyn: Dynamics) -> None:
        """Episodes whose continuation is complete enter memory and become recallable."""
        pending = self.pending
        if pending is None or len(pending) == 0:
            return
        newest, horizon = n - 1, self.horizon
        due = int(np.searchsorted(pending.origins, newest - horizon, side="right"))
        if due == 0:
            return
        done = pending.rows(0, due)
        origins = done.origins
        rows = obs.history.last(int(newest - origins[0]))  # observations after origins[0]
        windows = sliding_window_view(rows, (horizon, rows.shape[1]))[:, 0]
        records: dict[str, np.ndarray] = {
            "source": np.full(due, self.source, dtype=np.int64),
            "origin": origins,
            "window_start": done.window_starts,
            "rank": done.sig_ranks,
            "eigenvalues": done.sig_eigenvalues,
            "modes": done.sig_modes,
            "state": done.states,
            "history": done.histories,
            "continuation": windows[origins - origins[0]],
            "forecast": done.forecasts,
            "ref_mean": done.ref_means,
            "ref_scale": done.ref_scales,
        }
        if self.successor:
            successor = self._successor_record(obs, dyn)
            records |= {k: np.broadcast_to(v, (due, *v.shape)) for k, v in successor.items()}
        self.memory.add_many(done.keys, records)
        self.pending = pending.rows(due)

    def _successor_record(self, obs: Observables, dyn: Dynamics) -> dict[str, np.ndarray]:
        """The operator fitted just after an episode's horizon (the latest scored fit)."""
        fit = self.last_fit
        assert fit is not None and obs.ref_mean is not None and obs.ref_scale is not None
        r = min(fit.rank, dyn.max_rank)
        eigenvalues = np.zeros(dyn.max_rank, dtype=np.complex128)
        modes = np.zeros((dyn.n_features, dyn.max_rank), dtype=np.complex128)
        eigenvalues[:r] = fit.eigenvalues[:r]
        modes[:, :r] = fit.modes[:, :r]
        return {
            "succ_eigenvalues": eigenvalues,
            "succ_modes": modes,
            "succ_rank": np.array(r, dtype=np.int64),
            "succ_ref_mean": obs.ref_mean.copy(),
            "succ_ref_scale": obs.ref_scale.copy(),
        }

    def get_state(self) -> State:
        meta: dict[str, Any] = {
            "source": self.source,
            "cursor": self.cursor,
            "has_pending": self.pending is not None,
            "has_last_fit": self.last_fit is not None,
            "has_last_signature": self.last_signature is not None,
        }
        arrays: dict[str, np.ndarray] = {}
        if self.pending is not None:
            arrays |= {
                f"pending.{name}": getattr(self.pending, name) for name in self.pending.FIELDS
            }
        if self.last_fit is not None:
            arrays |= {f"last_fit.{name}": getattr(self.last_fit, name) for name in _FIT_FIELDS}
            arrays["last_fit.n_pairs"] = np.array(self.last_fit.n_pairs, dtype=np.int64)
        if self.last_signature is not None:
            sig = self.last_signature
            arrays["last_signature.eigenvalues"] = sig.eigenvalues
            arrays["last_signature.modes"] = sig.modes
            arrays["last_signature.rank"] = np.array(sig.rank, dtype=np.int64)
        return meta, arrays

    def set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.source = int(meta["source"])
        self.cursor = None if meta["cursor"] is None else int(meta["cursor"])
        self.pending = None
        if meta["has_pending"]:
            self.pending = PendingRecords(
                *(np.array(arrays[f"pending.{name}"]) for name in PendingRecords.FIELDS)
            )
        self.last_fit = None
        if meta["has_last_fit"]:
            self.last_fit = KoopmanFit(
                **{name: np.array(arrays[f"last_fit.{name}"]) for name in _FIT_FIELDS},
                n_pairs=int(arrays["last_fit.n_pairs"]),
            )
        self.last_signature = None
        if meta["has_last_signature"]:
            self.last_signature = Signature(
                eigenvalues=np.array(arrays["last_signature.eigenvalues"]),
                modes=np.array(arrays["last_signature.modes"]),
                rank=int(arrays["last_signature.rank"]),
            )
