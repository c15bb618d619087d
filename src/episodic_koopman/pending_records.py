"""Episodes made but not yet filed, in buffers written in batches and taken from the front.

>>> import numpy as np
>>> pending = PendingRecords(np.zeros((0, 2), dtype=np.float32), np.zeros((0, 0, 1)))
>>> at = pending.reserve(3)
>>> origins, starts, fits = pending.integer_buffers()
>>> origins[at : at + 3] = [5, 6, 7]
>>> pending.first_due(6), len(pending)
(2, 3)
>>> pending.drop_first(2)
>>> pending.origins.tolist()
[7]
"""

from __future__ import annotations

import numpy as np

from .jit import kernel


class PendingRecords:
    """Episodes made but not yet filed (their continuations are not all observed), oldest first.

    Every field has one row per episode, so how they were batched leaves no trace.
    Episodes are filed into memory by prefix as their continuations complete. The
    rows live in buffers (rows ``[start, stop)``) that batches are written into and
    taken from, so neither copies the rows held; a field is a view of them, valid
    until the next `reserve`.
    """

    FIELDS = ("origins", "window_starts", "keys", "forecasts", "fits")

    def __init__(self, keys_like: np.ndarray, forecasts_like: np.ndarray) -> None:
        """No rows, for keys and forecasts of the rows', dtypes and shapes as those given."""
        self._origins = np.zeros(0, dtype=np.int64)  # (B,) observation indices
        self._window_starts = np.zeros(0, dtype=np.int64)  # (B,)
        self._fits = np.zeros(0, dtype=np.int64)  # (B,) rows of the fit table
        self._keys = np.zeros((0, *keys_like.shape[1:]), dtype=keys_like.dtype)  # (B, key dim)
        # (B, horizon, c): the operator's forecast; (B, 0, c) unless kept
        self._forecasts = np.zeros((0, *forecasts_like.shape[1:]), dtype=forecasts_like.dtype)
        self._start = self._stop = 0

    @classmethod
    def of(
        cls,
        origins: np.ndarray,
        window_starts: np.ndarray,
        keys: np.ndarray,
        forecasts: np.ndarray,
        fits: np.ndarray,
    ) -> PendingRecords:
        """Rows holding the given fields (copied)."""
        records = cls(keys, forecasts)
        at = records.reserve(origins.shape[0])
        for buffer, values in zip(
            records.integer_buffers(), (origins, window_starts, fits), strict=True
        ):
            buffer[at : at + values.shape[0]] = values
        records.write(at, keys, forecasts)
        return records

    def __len__(self) -> int:
        return self._stop - self._start

    @property
    def origins(self) -> np.ndarray:
        return self._origins[self._start : self._stop]

    @property
    def window_starts(self) -> np.ndarray:
        return self._window_starts[self._start : self._stop]

    @property
    def keys(self) -> np.ndarray:
        return self._keys[self._start : self._stop]

    @property
    def forecasts(self) -> np.ndarray:
        return self._forecasts[self._start : self._stop]

    @property
    def fits(self) -> np.ndarray:
        return self._fits[self._start : self._stop]

    def reserve(self, count: int) -> int:
        """Add ``count`` rows at the end, to be written at buffer index (returned) on."""
        live = self._stop - self._start
        if self._stop + count > self._origins.shape[0]:
            # Room for twice the rows then held, so moves are rare (pending rows are few).
            size = 2 * (live + count)
            for name in ("_origins", "_window_starts", "_keys", "_forecasts", "_fits"):
                old = getattr(self, name)
                new = np.zeros((size, *old.shape[1:]), dtype=old.dtype)
                new[:live] = old[self._start : self._stop]
                setattr(self, name, new)
            self._start, self._stop = 0, live
        at = self._stop
        self._stop += count
        return at

    def integer_buffers(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The whole buffers of origins, window starts and fit rows, to write reserved rows."""
        return self._origins, self._window_starts, self._fits

    def write(self, at: int, keys: np.ndarray, forecasts: np.ndarray | None) -> None:
        """Write reserved rows ``at, at + 1, ..`` of the keys and (if given) forecasts."""
        self._keys[at : at + keys.shape[0]] = keys
        if forecasts is not None:
            self._forecasts[at : at + forecasts.shape[0]] = forecasts

    def oldest(self, count: int) -> _Oldest:
        """The oldest ``count`` rows (views, valid until the records change)."""
        return _Oldest(slice(self._start, self._start + count), self)

    def drop_first(self, count: int) -> None:
        """Forget the oldest ``count`` rows (filed)."""
        self._start += count

    def first_due(self, limit: int) -> int:
        """How many of the oldest rows have an origin at most ``limit``."""
        return _count_at_most(self._origins, self._start, self._stop, limit)


class _Oldest:
    """The oldest rows of pending records, as views (valid until they change)."""

    def __init__(self, rows: slice, pending: PendingRecords) -> None:
        self.origins = pending._origins[rows]
        self.window_starts = pending._window_starts[rows]
        self.keys = pending._keys[rows]
        self.forecasts = pending._forecasts[rows]
        self.fits = pending._fits[rows]


@kernel
def _count_at_most(values, start, stop, limit):  # type: ignore[no-untyped-def]
    """How many of the ascending ``values[start:stop]`` are at most ``limit``
    (``np.searchsorted(..., side="right")``)."""
    lo, hi = start, stop
    while lo < hi:
        mid = (lo + hi) >> 1
        if values[mid] <= limit:
            lo = mid + 1
        else:
            hi = mid
    return lo - start


__all__ = ["PendingRecords"]
