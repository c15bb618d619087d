"""Episodes as references: offsets into the series' history and rows of a per-fit table.

An episode's state window and what followed it are slices of the series' own
history, and its spectral signature and standardisation are shared by every
episode made with one scored fit. A model's own memory therefore stores per
episode only its origin, the row of its fit in a `RowTable`, and the few
per-episode values an expert needs. `EpisodeRefs.expand` rebuilds the full
records of the handful of episodes being reranked: the normalised states are
recomputed from the history exactly as they were when the keys were made.

A memory shared by several models cannot read another model's history, so
there the recorder stores copies of the windows instead (`EpisodeMemory.holds_copies`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .components import State, prefixed, unprefixed
from .embedding import History
from .jit import kernel
from .recall import KeyWeights, normalized_states, signature_columns, state_columns
from .state_checks import state_count


class RowTable:
    """Rows with consecutive indices, appended in order; the oldest are dropped when unused.

    Episodes are filed in origin order and refer to nondecreasing rows, so the
    rows still referred to are always a suffix: `drop_below` the oldest live
    episode's row collects the rest.
    """

    def __init__(self) -> None:
        self.base = 0  # row index held at position 0 of the columns
        self.first = 0  # oldest row kept
        self.next = 0  # index of the next row
        self._columns: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return self.next - self.first

    def append(self, row: dict[str, np.ndarray]) -> int:
        """Add ``row`` (the same names and shapes every time); returns its index."""
        size = next(iter(self._columns.values())).shape[0] if self._columns else 0
        if self.next - self.base >= size:
            keep = slice(self.first - self.base, self.next - self.base)
            held = self.next - self.first
            # Compact in place while a quarter is free, else grow by half: a table in
            # steady state (rows added as fast as collected) stays near its live size.
            new_size = size if 4 * (held + 1) <= 3 * size else max(16, 3 * (held + 1) // 2)
            columns = {}
            for name, value in row.items():
                value = np.asarray(value)
                column = np.zeros((new_size, *value.shape), dtype=value.dtype)
                if name in self._columns:
                    column[:held] = self._columns[name][keep]
                columns[name] = column
            self._columns, self.base = columns, self.first
        position = self.next - self.base
        for name, value in row.items():
            self._columns[name][position] = value
        self.next += 1
        return self.next - 1

    def last_equals(self, row: dict[str, np.ndarray]) -> bool:
        """Whether the newest row holds exactly ``row`` (so it can be reused)."""
        if len(self) == 0:
            return False
        position = self.next - 1 - self.base
        for name, value in row.items():
            held = self._columns[name][position]
            # The same bytes are equal values (the values are finite); other bytes may still
            # be (-0.0 and 0.0), which array_equal decides (of one shape: all ``==``).
            value = np.asarray(value)
            if held.dtype == value.dtype and held.shape == value.shape:
                if held.tobytes() != value.tobytes() and not (held == value).all():
                    return False
            elif not np.array_equal(held, value):
                return False
        return True

    def rows(
        self, indices: np.ndarray, names: tuple[str, ...] | None = None
    ) -> dict[str, np.ndarray]:
        """The columns (all, or ``names``) at rows ``indices`` (which must be kept)."""
        return self.at(self.positions(indices), names)

    def positions(self, indices: np.ndarray) -> np.ndarray:
        """Where rows ``indices`` (which must be kept) are in the columns, for `at`."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < self.first or indices.max() >= self.next):
            raise KeyError("row is not in the table (collected or never added)")
        return indices - self.base

    def at(
        self, positions: np.ndarray, names: tuple[str, ...] | None = None
    ) -> dict[str, np.ndarray]:
        """The columns (all, or ``names``) at `positions` (valid until the next append)."""
        if names is not None:
            return {name: self._columns[name][positions] for name in names}
        return {name: column[positions] for name, column in self._columns.items()}

    def column(self, name: str) -> np.ndarray:
        """Column ``name`` whole: row ``i`` at position ``i - base`` (valid until the next
        append), for a caller that reads kept rows only."""
        return self._columns[name]

    def drop_below(self, index: int) -> None:
        """Forget rows before ``index`` (their space is reused at the next growth)."""
        self.first = max(self.first, min(int(index), self.next))

    def get_state(self) -> State:
        kept = slice(self.first - self.base, self.next - self.base)
        meta = {"first": self.first, "next": self.next, "columns": sorted(self._columns)}
        return meta, {name: column[kept] for name, column in self._columns.items()}

    def set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.restore(*self.checked(meta, arrays))

    @staticmethod
    def checked(
        meta: dict[str, Any], arrays: dict[str, np.ndarray], owner: str = "RowTable"
    ) -> tuple[int, int, dict[str, np.ndarray]]:
        """A saved state's rows and columns, once each column holds one row per kept
        index and ranks fit their signatures (compiled loops read rows by position and
        a signature's first ``rank`` entries); ``ValueError`` naming the field if not."""
        first = state_count(owner, "first", meta["first"])
        stop = state_count(owner, "next", meta["next"], first)
        columns = {}
        for name in meta["columns"]:
            if name not in arrays:
                raise ValueError(f"{owner}: the saved state has no {name!r}")
            column = np.array(arrays[name])
            if column.ndim < 1 or column.shape[0] != stop - first:
                raise ValueError(
                    f"{owner}: {name!r} must have {stop - first} rows, got shape {column.shape}"
                )
            columns[name] = column
        rank = columns.get("rank")
        if rank is not None and rank.size:
            if rank.dtype.kind not in "iu" or rank.ndim != 1:
                raise ValueError(f"{owner}: 'rank' must be integers, one per row")
            width = min(
                (columns[n].shape[1] for n in _PADDED_TO_RANK if n in columns), default=None
            )
            if rank.min() < 0 or (width is not None and rank.max() > width):
                raise ValueError(
                    f"{owner}: 'rank' must be in [0, {width}], got {rank.min()}..{rank.max()}"
                )
        return first, stop, columns

    def restore(self, first: int, stop: int, columns: dict[str, np.ndarray]) -> None:
        """Hold `checked`'s rows."""
        self.first, self.next, self.base, self._columns = first, stop, first, columns


class EpisodeRefs:
    """The windows and fit rows behind one model's episodes.

    ``history`` is the model's history ring, long enough to hold every live
    episode's state window and continuation. ``window_span`` is how far an
    operator's snapshots reach back from its newest observation (``window +
    delays - 1``). ``fits`` holds a signature (eigenvalues, rank, and modes when
    ``keep_modes``) and a standardisation per scored fit; ``successors`` the fit
    in force when episodes were filed (for the ``transfer`` expert).
    """

    def __init__(
        self,
        history: History,
        state_delays: int,
        horizon: int,
        keep_modes: bool,
        window_span: int,
    ) -> None:
        self.history = history
        self.window_span = window_span
        self.state_delays = state_delays
        self.horizon = horizon
        self.keep_modes = keep_modes
        self.source = 0
        self.fits = RowTable()
        self.successors = RowTable()
        # Offsets from an origin to its state window's rows, and to its continuation's.
        self._before = np.arange(1 - state_delays, 1)
        self._after = np.arange(1, horizon + 1)

    @staticmethod
    def reuse_or_append(table: RowTable, row: dict[str, np.ndarray]) -> int:
        """The newest row if it already holds ``row``, else a new one: a row per distinct fit,
        however often episodes were made with it."""
        return table.next - 1 if table.last_equals(row) else table.append(row)

    def windows(self, origins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """State windows ``(B, state_delays, c)`` and continuations ``(B, horizon, c)``."""
        origins = np.asarray(origins, dtype=np.int64)[:, None]
        return self.history.rows(origins + self._before), self.history.rows(origins + self._after)

    def keys(self, records: dict[str, np.ndarray], weights: KeyWeights) -> np.ndarray:
        """The keys of episodes (at least one), made again from their references: the same
        products of the same values as when they were filed, so bit-identical.

        The signature coordinates are made once per fit and gathered (a few hundred fits
        for thousands of episodes); the states' windows are one strided copy.
        """
        rows = np.asarray(records["fit"], dtype=np.int64)
        low = int(rows.min())
        fits = self.fits.rows(np.arange(low, int(rows.max()) + 1))
        modes = fits["modes"] if self.keep_modes else _no_modes(fits["eigenvalues"])
        signature = signature_columns(fits["eigenvalues"], modes, weights)
        states = normalized_states(self.history.windows(records["origin"], self.state_delays))
        width = signature.shape[1]
        keys = np.empty((rows.size, width + states.shape[1]), dtype=np.float32)
        keys[:, :width] = signature[rows - low]
        keys[:, width:] = state_columns(states, weights)
        return keys

    def match_parts(self, records: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """What the exact rerank reads of episodes: ``rank``, ``eigenvalues``, ``modes`` and
        ``state``, the values `expand` gives, without the continuations that only the few
        episodes kept need (`expand_kept` adds them). Also ``history`` (the state windows)
        and ``positions`` (of the fits' rows), which `expand_kept` reuses."""
        fits, refs = self.fits, records["fit"]
        eigenvalues = fits.column("eigenvalues")
        n = refs.shape[0]
        positions = np.empty(n, dtype=np.int64)
        ranks = np.empty(n, dtype=np.int64)
        gathered = np.empty((n, eigenvalues.shape[1]), dtype=eigenvalues.dtype)
        if not _fit_rows_into(
            refs,
            fits.first,
            fits.next,
            fits.base,
            fits.column("rank"),
            eigenvalues.view(np.float64),
            positions,
            ranks,
            gathered.view(np.float64),
        ):
            raise KeyError("row is not in the table (collected or never added)")
        histories = self._windows(records["origin"], self._before)
        return {
            "rank": ranks,
            "eigenvalues": gathered,
            "modes": fits.at(positions, ("modes",))["modes"]
            if self.keep_modes
            else _no_modes(gathered),
            "state": normalized_states(histories),
            "history": histories,
            "positions": positions,
        }

    def _windows(self, origins: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """The history rows at ``origins + offsets`` ``(B, len(offsets), c)``: what
        ``history.rows(origins[:, None] + offsets)`` gives, in one compiled gather."""
        history = self.history
        held = history.last(min(history.count, history.length))
        out = np.empty((origins.shape[0], offsets.shape[0], held.shape[1]))
        if not _windows_into(held, history.count - held.shape[0], origins, offsets, out):
            raise IndexError("history row is no longer (or not yet) held")
        return out

    def expand_kept(
        self, records: dict[str, np.ndarray], parts: dict[str, np.ndarray], kept: np.ndarray
    ) -> dict[str, np.ndarray]:
        """`expand` of rows ``kept`` of ``records``, whose `match_parts` are ``parts``: the
        same values, with what the rerank read taken from ``parts``."""
        origins = records["origin"][kept]
        ref = self.fits.at(parts["positions"][kept], ("ref_mean", "ref_scale"))
        out = {name: value[kept] for name, value in records.items() if name not in ("fit", "succ")}
        out |= {
            "window_start": np.maximum(origins - self.window_span, 0),
            "source": np.full(origins.shape[0], self.source, dtype=np.int64),
            "rank": parts["rank"][kept],
            "eigenvalues": parts["eigenvalues"][kept],
            "modes": parts["modes"][kept],
            "ref_mean": ref["ref_mean"],
            "ref_scale": ref["ref_scale"],
            "state": parts["state"][kept],
            "history": parts["history"][kept],
            "continuation": self._windows(origins, self._after),
        }
        if "succ" in records:
            out |= self.successors.rows(records["succ"][kept])
        return out

    def expand(
        self, records: dict[str, np.ndarray], states: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Full records (signature, state, windows...) from references (``fit``, ``origin``).

        ``states``: the episodes' normalised states if known (`match_parts`), else made.
        """
        fits = self.fits.rows(records["fit"])
        histories, continuations = self.windows(records["origin"])
        out = {name: value for name, value in records.items() if name not in ("fit", "succ")}
        out |= {
            # The fit's window ends at the origin and reaches back window + delays - 1
            # observations, or to the stream's start: no need to store it.
            "window_start": np.maximum(records["origin"] - self.window_span, 0),
            "source": np.full(records["origin"].shape[0], self.source, dtype=np.int64),
            "rank": fits["rank"],
            "eigenvalues": fits["eigenvalues"],
            "modes": fits["modes"] if self.keep_modes else _no_modes(fits["eigenvalues"]),
            "ref_mean": fits["ref_mean"],
            "ref_scale": fits["ref_scale"],
            "state": normalized_states(histories) if states is None else states,
            "history": histories,
            "continuation": continuations,
        }
        if "succ" in records:
            out |= self.successors.rows(records["succ"])
        return out

    def get_state(self) -> State:
        fits_meta, fits_arrays = self.fits.get_state()
        fits_arrays, ragged = _ragged(fits_arrays)
        succ_meta, succ_arrays = self.successors.get_state()
        arrays = prefixed("fits", fits_arrays) | prefixed("successors", succ_arrays)
        meta = {"source": self.source, "fits": fits_meta, "successors": succ_meta}
        if ragged:
            meta["fits_ragged"] = ragged
        return meta, arrays

    def set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        # Both tables are checked before either is replaced.
        source = int(meta["source"])
        fits = _padded(unprefixed("fits", arrays), meta.get("fits_ragged", {}))
        fits_state = RowTable.checked(meta["fits"], fits, "EpisodeRefs fits")
        successors = unprefixed("successors", arrays)
        successors_state = RowTable.checked(
            meta["successors"], successors, "EpisodeRefs successors"
        )
        self.source = source
        self.fits.restore(*fits_state)
        self.successors.restore(*successors_state)


#: Columns of the fits table padded to the largest rank along their second axis: a saved
#: model keeps only each fit's first ``rank`` entries (the mean rank is a third of the
#: largest at service defaults, and the eigenvalues were a third of a full model's file).
_PADDED_TO_RANK = ("eigenvalues", "modes")


def _ragged(arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The fits columns with their padding cut, and each cut column's padded width.

    Only padding that is exactly zero (all bits) is cut, so `_padded` restores the
    columns bit for bit; anything else is kept whole.
    """
    if "rank" not in arrays:
        return arrays, {}
    rank = np.asarray(arrays["rank"])
    out, widths = dict(arrays), {}
    for name in _PADDED_TO_RANK:
        column = arrays.get(name)
        if column is None or column.ndim < 2 or column.shape[0] != rank.shape[0]:
            continue
        width = column.shape[1]
        if rank.size and (rank.min() < 0 or rank.max() > width):
            continue
        kept = np.arange(width) < rank[:, None]
        if np.ascontiguousarray(column[~kept]).view(np.uint8).any():
            continue
        out[name] = np.ascontiguousarray(column[kept])
        widths[name] = int(width)
    return out, widths


def _padded(arrays: dict[str, np.ndarray], widths: dict[str, int]) -> dict[str, np.ndarray]:
    """Inverse of `_ragged`."""
    if not widths:
        return arrays
    rank = np.asarray(arrays["rank"], dtype=np.int64)
    out = dict(arrays)
    for name, width in widths.items():
        values = np.asarray(arrays[name])
        if values.shape[0] != int(rank.sum()) or (rank.size and rank.max() > width):
            raise ValueError(f"fits.{name}: saved entries do not match the ranks")
        column = np.zeros((rank.shape[0], int(width), *values.shape[1:]), dtype=values.dtype)
        column[np.arange(width) < rank[:, None]] = values
        out[name] = column
    return out


def _no_modes(eigenvalues: np.ndarray) -> np.ndarray:
    """A placeholder for modes not kept (matching ignores them at a zero mode weight)."""
    return np.zeros((*eigenvalues.shape, 0), dtype=np.complex128)


def complete_copies(records: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Records of a memory holding copies, with the normalised states recomputed."""
    out = dict(records)
    out["state"] = normalized_states(records["history"])
    if "modes" not in out:
        out["modes"] = _no_modes(records["eigenvalues"])
    return out


@kernel
def _fit_rows_into(
    refs: np.ndarray,
    first: int,
    next_: int,
    base: int,
    rank_column: np.ndarray,
    eigenvalue_column: np.ndarray,
    positions: np.ndarray,
    ranks: np.ndarray,
    eigenvalues: np.ndarray,
) -> bool:
    """The positions, ranks and eigenvalues (as interleaved floats) of fit rows ``refs``
    of a `RowTable`; False where a row is not kept."""
    for i in range(refs.shape[0]):
        row = refs[i]
        if row < first or row >= next_:
            return False
        position = row - base
        positions[i] = position
        ranks[i] = rank_column[position]
        for j in range(eigenvalues.shape[1]):
            eigenvalues[i, j] = eigenvalue_column[position, j]
    return True


@kernel
def _windows_into(
    held: np.ndarray, held_from: int, origins: np.ndarray, offsets: np.ndarray, out: np.ndarray
) -> bool:
    """``out[b, t] = history row origins[b] + offsets[t]`` from the rows ``held`` (the first
    is observation ``held_from``); False where a row is not held."""
    for b in range(origins.shape[0]):
        for t in range(offsets.shape[0]):
            row = origins[b] + offsets[t] - held_from
            if row < 0 or row >= held.shape[0]:
                return False
            for c in range(held.shape[1]):
                out[b, t, c] = held[row, c]
    return True
