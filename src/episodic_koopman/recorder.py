"""The episode recorder: episodes made in batches, held until their continuation is observed."""

from __future__ import annotations

from typing import Any

import numpy as np

from .components import State, prefixed, unprefixed
from .dynamics import Dynamics
from .episode_refs import EpisodeRefs
from .jit import kernel
from .koopman_fit import KoopmanFit, fit_arrays, fit_from_arrays, propagate_many
from .memory import EpisodeMemory
from .observables import Observables
from .pending_records import PendingRecords
from .recall import KeyWeights, keys_of_row, normalized_states, signature_row
from .spectrum import Signature
from .state_checks import Shape, state_array, state_count


class EpisodeRecorder:
    """Makes an episode every ``stride`` steps and files it once ``horizon`` steps followed.

    Episodes between scored steps share the fit and signature of the last scored
    step (`remember`), so they can be made in one batch later (`make`).
    ``successor`` adds the fit in force when an episode is filed (for the
    ``transfer`` expert); ``keep_forecast`` the operator's forecast at each origin
    (for the ``residual`` expert).

    Into the model's own memory, episodes go as references (`EpisodeRefs`); into a
    memory that holds copies (shared by several models), with copies of their
    windows and signature.
    """

    def __init__(
        self,
        memory: EpisodeMemory,
        refs: EpisodeRefs,
        key_weights: KeyWeights,
        horizon: int,
        stride: int,
        state_delays: int,
        successor: bool,
        keep_forecast: bool,
    ) -> None:
        self.memory = memory
        self.refs = refs
        self.key_weights = key_weights
        self.horizon = horizon
        self.stride = stride
        self.state_delays = state_delays
        self.successor = successor
        self.keep_forecast = keep_forecast
        self.pending: PendingRecords | None = None
        self.cursor: int | None = None  # next origin whose episode is still to make
        self.last_fit: KoopmanFit | None = None
        self.last_signature: Signature | None = None
        self._signature_row: np.ndarray | None = None  # of last_signature, once made
        # What the fit table's newest row was made of, and its index (see `_fit_row`).
        self._newest_fit_row: tuple[tuple[Signature, np.ndarray, np.ndarray], int] | None = None

    @property
    def source(self) -> int:
        return self.refs.source

    @source.setter
    def source(self, value: int) -> None:
        self.refs.source = value

    def remember(self, fit: KoopmanFit, signature: Signature) -> None:
        """The fit and signature of a scored step, used by the episodes until the next one."""
        self.last_fit, self.last_signature = fit, signature
        # Its key coordinates, as the query just made them (queries between scored
        # ticks make others before these episodes are made).
        self._signature_row = signature_row(signature, self.key_weights)

    def make(self, upto: int, n: int, ready_at: int, obs: Observables, dyn: Dynamics) -> None:
        """Episodes for the due origins in ``[cursor, upto]``, with the latest scored fit."""
        start = self.cursor
        if start is None or upto < start:
            return
        first = start + (ready_at - 1 - start) % self.stride
        self.cursor = upto + 1
        if upto < first:
            return
        count = (upto - first) // self.stride + 1  # origins first, first + stride, ..upto
        fit, signature = self.last_fit, self.last_signature
        assert fit is not None and signature is not None
        assert obs.ref_mean is not None and obs.ref_scale is not None
        ds, newest = self.state_delays, n - 1
        # The state windows of each origin, ``rows[o - first : o - first + ds]``.
        rows = obs.history.last(newest - first + ds)
        windows = np.empty((count, ds, rows.shape[1]))
        _state_windows(rows, self.stride, windows)
        states = normalized_states(windows)
        if self.keep_forecast:
            origins = np.arange(first, upto + 1, self.stride, dtype=np.int64)
            lag = newest - origins
            snapshots = dyn.dmd.snapshots()
            forecasts = propagate_many(
                fit,
                snapshots[snapshots.shape[0] - 1 - lag],
                self.horizon,
                obs.embedding.readout,
                dyn.stabilize,
                dyn.dmd.n_pushed - 1 - lag,
            )
            forecasts = forecasts * obs.ref_scale + obs.ref_mean
        else:  # none kept: (B, 0, c)
            forecasts = np.zeros((0, 0, obs.ref_mean.shape[0]))
        fit_row = self._fit_row(signature, obs.ref_mean, obs.ref_scale)
        if self._signature_row is None:
            self._signature_row = signature_row(signature, self.key_weights)
        keys = keys_of_row(self._signature_row, states, self.key_weights)
        if self.pending is None:
            self.pending = PendingRecords(keys, forecasts)
        pending = self.pending
        at = pending.reserve(count)
        _write_rows(
            first,
            self.stride,
            newest,
            dyn.dmd.n_pushed,
            dyn.window + 1,
            obs.delays,
            fit_row,
            at,
            count,
            *pending.integer_buffers(),
        )
        pending.write(at, keys, forecasts if self.keep_forecast else None)

    def _fit_row(self, signature: Signature, ref_mean: np.ndarray, ref_scale: np.ndarray) -> int:
        """The fit table's row of a signature and standardisation: the newest if it holds
        them, else a new one.

        Signatures and standardisations are replaced, never changed in place, so the
        same objects as the newest row was made of need no comparison."""
        fits, made_of = self.refs.fits, (signature, ref_mean, ref_scale)
        held = self._newest_fit_row
        if (
            held is not None
            and held[1] == fits.next - 1
            and all(a is b for a, b in zip(held[0], made_of, strict=True))
        ):
            return held[1]
        row = {
            "eigenvalues": signature.eigenvalues,
            "rank": np.array(signature.rank, dtype=np.int64),
            "ref_mean": ref_mean,
            "ref_scale": ref_scale,
        }
        if self.refs.keep_modes:
            row["modes"] = signature.modes
        index = EpisodeRefs.reuse_or_append(fits, row)
        self._newest_fit_row = (made_of, index)
        return index

    def file(self, n: int, obs: Observables, dyn: Dynamics) -> None:
        """Episodes whose continuation is complete enter memory and become recallable."""
        pending = self.pending
        if pending is None or len(pending) == 0:
            return
        newest, horizon = n - 1, self.horizon
        due = pending.first_due(newest - horizon)
        if due == 0:
            return
        done = pending.oldest(due)
        records: dict[str, np.ndarray] = {"origin": done.origins}
        if self.keep_forecast:
            records["forecast"] = done.forecasts
        successor = self._successor_record(obs, dyn) if self.successor else None
        if self.memory.holds_copies:
            # A shared memory: other models cannot read this one's history or fit table.
            histories, continuations = self.refs.windows(done.origins)
            fits = self.refs.fits.rows(done.fits)
            records |= {
                "window_start": done.window_starts,
                "source": np.full(due, self.source, dtype=np.int64),
                "rank": fits["rank"],
                "eigenvalues": fits["eigenvalues"],
                "ref_scale": fits["ref_scale"],
                "history": histories,
                "continuation": continuations,
            }
            if self.refs.keep_modes:
                records["modes"] = fits["modes"]
            if successor is not None:
                records |= {k: np.broadcast_to(v, (due, *v.shape)) for k, v in successor.items()}
        else:
            # Row indices grow by one per scored fit: int32 lasts ~10^10 observations.
            records["fit"] = done.fits.astype(np.int32)
            if successor is not None:
                succ = EpisodeRefs.reuse_or_append(self.refs.successors, successor)
                records["succ"] = np.full(due, succ, dtype=np.int64)
        self.memory.add_many(done.keys, records)
        pending.drop_first(due)
        self._collect()

    def _collect(self) -> None:
        """Drop the table rows that no live or pending episode refers to any more."""
        fits, successors = self.refs.fits, self.refs.successors
        fit_floor, succ_floor = fits.next - 1, successors.next - 1  # the newest stays, for reuse
        if self.pending is not None and len(self.pending):
            fit_floor = min(fit_floor, int(self.pending.fits[0]))
        memory = self.memory
        if not memory.holds_copies and len(memory):
            fit_floor = min(fit_floor, int(memory.value("fit", memory.oldest_id)))
            succ = memory.value("succ", memory.oldest_id)
            if succ is not None:
                succ_floor = min(succ_floor, int(succ))
        fits.drop_below(fit_floor)
        successors.drop_below(succ_floor)

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
            "cursor": self.cursor,
            "has_pending": self.pending is not None,
            "has_last_fit": self.last_fit is not None,
            "has_last_signature": self.last_signature is not None,
        }
        arrays: dict[str, np.ndarray] = {}  # the references are saved by the recaller
        if self.pending is not None:
            arrays |= {
                f"pending.{name}": getattr(self.pending, name).copy()
                for name in self.pending.FIELDS
            }
        if self.last_fit is not None:
            arrays |= prefixed("last_fit", fit_arrays(self.last_fit))
        if self.last_signature is not None:
            sig = self.last_signature
            arrays["last_signature.eigenvalues"] = sig.eigenvalues
            arrays["last_signature.modes"] = sig.modes
            arrays["last_signature.rank"] = np.array(sig.rank, dtype=np.int64)
        return meta, arrays

    def set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        # Everything is read and checked before anything is assigned: compiled loops
        # index the pending rows by their count and the signature by its rank.
        owner = "EpisodeRecorder"
        cursor = None if meta["cursor"] is None else state_count(owner, "cursor", meta["cursor"])
        pending = None
        if meta["has_pending"]:
            pending = PendingRecords.of(*self._pending_fields(arrays))
        last_fit = None
        if meta["has_last_fit"]:
            last_fit = fit_from_arrays(unprefixed("last_fit", arrays))
        last_signature = None
        if meta["has_last_signature"]:
            eigenvalues = state_array(
                owner, arrays, "last_signature.eigenvalues", (None,), np.complex128
            )
            r_max = eigenvalues.shape[0]
            modes = state_array(owner, arrays, "last_signature.modes", (r_max, None), np.complex128)
            rank = state_array(owner, arrays, "last_signature.rank", (), np.int64)
            last_signature = Signature(
                eigenvalues=eigenvalues,
                modes=modes,
                rank=state_count(owner, "last_signature.rank", rank[()], 0, r_max),
            )
        self.cursor, self.pending, self.last_fit = cursor, pending, last_fit
        self.last_signature, self._signature_row = last_signature, None
        self._newest_fit_row = None  # the table is the one restored

    def _pending_fields(self, arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The saved pending rows' fields (in `PendingRecords.FIELDS` order), checked
        against one another and the memory's key size."""
        owner = "EpisodeRecorder"
        origins = state_array(owner, arrays, "pending.origins", (None,), np.int64)
        b = origins.shape[0]
        # The saved dtypes are kept (keys as the memory stores them).
        keys = arrays.get("pending.keys")
        kind = np.float64 if keys is None else np.asarray(keys).dtype.type
        steps = self.horizon if self.keep_forecast else 0
        shapes: dict[str, tuple[Shape, type]] = {
            "window_starts": ((b,), np.int64),
            "keys": ((b, self.memory.dim), kind),
            "forecasts": ((b, steps, None), np.float64),
            "fits": ((b,), np.int64),
        }
        checked = {"origins": origins} | {
            name: state_array(owner, arrays, f"pending.{name}", shape, dtype)
            for name, (shape, dtype) in shapes.items()
        }
        return [checked[name] for name in PendingRecords.FIELDS]


@kernel
def _state_windows(rows, stride, out):  # type: ignore[no-untyped-def]
    """``out[b] = rows[b * stride : b * stride + width]``, ``out`` ``(B, width, c)``."""
    count, width, c = out.shape
    for b in range(count):
        for t in range(width):
            for j in range(c):
                out[b, t, j] = rows[b * stride + t, j]


@kernel
def _write_rows(
    first,
    stride,
    newest,
    n_pushed,
    max_snapshots,
    delays,
    fit_row,
    at,
    count,
    origins,
    window_starts,
    fits,
):  # type: ignore[no-untyped-def]
    """Rows ``at .. at + count - 1`` of the integer fields, for the origins ``first, first +
    stride, ..``: the origin, the first observation of its
    operator's window (``n_pushed - lag`` snapshots were pushed ``lag = newest - origin``
    steps ago, at most ``max_snapshots`` held), and the fit table's row."""
    for i in range(count):
        origin = first + i * stride
        snapshots = min(n_pushed - (newest - origin), max_snapshots)
        origins[at + i] = origin
        window_starts[at + i] = origin + 2 - snapshots - delays
        fits[at + i] = fit_row
