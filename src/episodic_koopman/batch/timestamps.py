"""A series on its regular grid: its spacing, its missing values, its future timestamps.

`infer_step` finds the spacing (a fixed step, or a calendar frequency such as month
start), `prepare_series` applies a ``missing`` policy to gaps and empty targets, and
`future_timestamps` continues the grid past the last observation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..stream import MISSING_POLICIES, missing_policy
from .errors import SeriesError, series_label
from .reading import SeriesData

#: The library's missing-value policies (`episodic_koopman.stream`), plus two that need
#: the whole series: linear interpolation and zero filling.
MISSING = (*MISSING_POLICIES, "interpolate", "zero")


@dataclass(frozen=True)
class Step:
    """A series' regular spacing: a fixed ``delta`` (ns or numeric units) or a calendar ``freq``."""

    delta: float | int | None = None
    freq: str | None = None
    tz: str | None = None  # calendar frequencies step on this zone's wall clock

    def describe(self, kind: str) -> str:
        """The spacing in words, for messages.

        >>> Step(delta=3_600_000_000_000).describe("datetime")
        '1 hour'
        >>> Step(delta=15 * 60_000_000_000).describe("datetime")
        '15 minutes'
        >>> Step(freq="MS").describe("datetime")
        '1 month (on month starts)'
        >>> Step(delta=2).describe("numeric")
        '2'
        """
        if self.freq is not None:
            return _describe_calendar(self.freq)
        if kind == "datetime":
            return _describe_nanoseconds(int(self.delta))  # type: ignore[arg-type]
        return str(self.delta)


_UNITS_NS = (
    ("week", 7 * 86_400_000_000_000),
    ("day", 86_400_000_000_000),
    ("hour", 3_600_000_000_000),
    ("minute", 60_000_000_000),
    ("second", 1_000_000_000),
    ("millisecond", 1_000_000),
    ("microsecond", 1_000),
    ("nanosecond", 1),
)

#: Calendar frequencies (pandas aliases, without their anchor) in words.
_CALENDAR_WORDS = {
    "MS": ("month", "on month starts"),
    "ME": ("month", "on month ends"),
    "M": ("month", "on month ends"),
    "QS": ("quarter", "on quarter starts"),
    "QE": ("quarter", "on quarter ends"),
    "Q": ("quarter", "on quarter ends"),
    "YS": ("year", "on year starts"),
    "AS": ("year", "on year starts"),
    "YE": ("year", "on year ends"),
    "Y": ("year", "on year ends"),
    "A": ("year", "on year ends"),
    "BMS": ("month", "on business month starts"),
    "BME": ("month", "on business month ends"),
    "B": ("business day", ""),
    "W": ("week", ""),
    "D": ("day", "on the local clock"),
}


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit}{'s' if n != 1 else ''}"


def _describe_nanoseconds(delta: int) -> str:
    for unit, size in _UNITS_NS:
        if delta % size == 0:
            return _plural(delta // size, unit)
    return _plural(delta, "nanosecond")


def _describe_calendar(freq: str) -> str:
    """``"MS"`` -> ``"1 month (on month starts)"``, ``"2W-SUN"`` -> ``"2 weeks (anchored SUN)"``."""
    head, _, anchor = freq.partition("-")
    digits = len(head) - len(head.lstrip("0123456789"))
    n, alias = int(head[:digits] or 1), head[digits:]
    words = _CALENDAR_WORDS.get(alias)
    if words is None:
        return freq
    unit, note = words
    notes = [note] if note else []
    if anchor:
        notes.append(f"anchored {anchor}")
    return _plural(n, unit) + (f" ({', '.join(notes)})" if notes else "")


@dataclass
class Prepared:
    """A series on its regular grid, ready to learn."""

    values: np.ndarray  # what the model learns, in order (NaN never appears)
    grid: np.ndarray  # timestamp of each learned value (same encoding as `SeriesData.ds`)
    last: int | float  # the last timestamp of the series (forecasts start one step after)
    step: Step
    n_filled: int = 0


def _fmt_time(value: Any, kind: str, tz: str | None = None) -> str:
    if kind == "datetime":
        import pandas as pd

        stamp = pd.Timestamp(int(value))
        if tz is not None:
            stamp = stamp.tz_localize("UTC").tz_convert(tz)
        return (
            stamp.isoformat() if stamp.hour or stamp.minute or stamp.second else str(stamp.date())
        )
    return str(value)


def _infer_freq(index: Any) -> str | None:
    """``pd.infer_freq`` as a string on pandas 2 and 3 (which moves it to an offset)."""
    import pandas as pd

    try:
        pd.get_option("future.infer_freq_returns_offset")
    except (KeyError, pd.errors.OptionError):
        return pd.infer_freq(index)
    with pd.option_context("future.infer_freq_returns_offset", True):
        offset = pd.infer_freq(index)
    return None if offset is None else offset.freqstr


def _calendar_grid(ds: np.ndarray, tz: str | None) -> tuple[str, np.ndarray, np.ndarray] | None:
    """A calendar frequency (monthly, yearly...) the timestamps lie on, its grid, positions."""
    import pandas as pd

    index = pd.DatetimeIndex(ds.astype("datetime64[ns]"))
    if tz is not None:  # on the wall clock, a day is a day even across a DST change
        index = index.tz_localize("UTC").tz_convert(tz)
    candidates = [_infer_freq(index)] if ds.size >= 3 else []
    for k in range(0, min(ds.size - 2, 30)):
        if candidates and candidates[-1]:
            break
        candidates.append(_infer_freq(index[k : k + 3]))
    for freq in candidates:
        if not freq:
            continue
        try:
            grid = pd.date_range(index[0], index[-1], freq=freq)
        except ValueError:
            continue
        positions = grid.get_indexer(index)
        if grid.size and positions.min() >= 0:
            if tz is not None:
                grid = grid.tz_convert("UTC").tz_localize(None)
            return freq, grid.to_numpy(dtype="datetime64[ns]").astype(np.int64), positions
    return None


def infer_step(s: SeriesData, kind: str) -> tuple[Step, np.ndarray, np.ndarray]:
    """The series' spacing, its regular grid from first to last timestamp, and where on
    the grid each (sorted) timestamp lies.

    The step is the most common difference between consecutive timestamps (or, for
    datetimes that no fixed step fits, a calendar frequency such as month start).
    Raises `SeriesError` on duplicated timestamps or timestamps off the grid.

    >>> s = SeriesData("a", 0, np.array([0, 2, 4, 8]), np.ones(4), np.arange(1, 5))
    >>> step, grid, positions = infer_step(s, "numeric")
    >>> step.delta, grid.tolist(), positions.tolist()
    (2, [0, 2, 4, 6, 8], [0, 1, 2, 4])
    """
    ds = s.ds
    if ds.size < 2:
        raise SeriesError(
            f"series {series_label(s.uid)}: one timestamp is not enough to infer a spacing"
        )
    diffs = np.diff(ds)
    if np.any(diffs == 0):
        j = int(np.argmax(diffs == 0))
        raise SeriesError(
            f"series {series_label(s.uid)}, row {s.rows[j + 1]}: duplicated timestamp "
            f"{_fmt_time(ds[j + 1], kind, s.tz)} (also at row {s.rows[j]})"
        )
    values, counts = np.unique(diffs, return_counts=True)
    delta = values[np.argmax(counts)]  # the smallest of the most common differences
    if kind == "numeric" and np.issubdtype(ds.dtype, np.floating):
        ratio = diffs / delta
        on_grid = np.abs(ratio - np.round(ratio)) <= 1e-9 * np.maximum(1.0, ratio)
    else:
        on_grid = diffs % delta == 0
    if np.all(on_grid):
        if np.issubdtype(ds.dtype, np.integer):
            positions = (ds - ds[0]) // delta
            step = Step(delta=int(delta))
        else:
            positions = np.round((ds - ds[0]) / delta).astype(np.int64)
            step = Step(delta=float(delta))
        grid = ds[0] + delta * np.arange(int(positions[-1]) + 1, dtype=ds.dtype)
        return step, grid, positions
    if kind == "datetime":
        calendar = _calendar_grid(ds, s.tz)
        if calendar is not None:
            return Step(freq=calendar[0], tz=s.tz), calendar[1], calendar[2]
    j = int(np.argmax(~on_grid))
    spacing = Step(delta=delta.item()).describe(kind)
    raise SeriesError(
        f"series {series_label(s.uid)}, row {s.rows[j + 1]}: irregular timestamp "
        f"{_fmt_time(ds[j + 1], kind, s.tz)} is off the series' regular spacing of {spacing} "
        f"(previous timestamp {_fmt_time(ds[j], kind, s.tz)}, row {s.rows[j]})"
    )


def prepare_series(s: SeriesData, kind: str, missing: str = "error") -> Prepared:
    """Sort, check the timestamps, and apply the ``missing`` policy to gaps and empty values.

    Policies: ``"error"`` fails the series on a gap (a timestamp missing from the
    regular grid) or an empty target; ``"ffill"`` repeats the last value;
    ``"interpolate"`` interpolates linearly (repeating the last value at the end);
    ``"zero"`` fills with 0; ``"drop"`` leaves them out (the model sees the
    observations as consecutive). Leading empty values are always dropped.

    >>> s = SeriesData("a", 0, np.array([1, 2, 4]), np.array([1.0, 2.0, 4.0]), np.arange(1, 4))
    >>> prepare_series(s, "numeric", "interpolate").values.tolist()
    [1.0, 2.0, 3.0, 4.0]
    """
    if s.problem is not None:
        raise SeriesError(s.problem)
    missing = missing_policy(missing, MISSING)
    order = np.argsort(s.ds, kind="stable")
    if np.any(order[1:] < order[:-1]):
        s = SeriesData(s.uid, s.index, s.ds[order], s.y[order], s.rows[order], s.problem, s.tz)
    step, grid, positions = infer_step(s, kind)
    finite = np.isfinite(s.y)
    if not finite.any():
        raise SeriesError(f"series {series_label(s.uid)}: every target value is empty")
    if missing == "drop":
        return Prepared(s.y[finite], s.ds[finite], s.ds[-1].item(), step, 0)
    values = np.full(grid.size, np.nan)
    values[positions] = s.y
    holes = ~np.isfinite(values)
    first = int(np.argmax(~holes))
    holes[:first] = False  # leading empty values are dropped, not filled
    empty = ~finite & (np.arange(finite.size) >= int(finite.argmax()))
    n_gaps, n_empty = grid.size - s.ds.size, int(np.count_nonzero(empty))
    if holes.any() and missing == "error":
        if n_gaps:
            seen = np.zeros(grid.size, dtype=bool)
            seen[positions] = True
            k = int(np.argmax(~seen))
            before = s.rows[np.searchsorted(positions, k) - 1]
            raise SeriesError(
                f"series {series_label(s.uid)}, after row {before}: "
                f"{n_gaps} missing timestamp(s) on its regular spacing of {step.describe(kind)} "
                f"(first: {_fmt_time(grid[k], kind, s.tz)}); choose a --missing policy "
                "(ffill, interpolate, zero or drop)"
            )
        j = int(np.argmax(empty))
        raise SeriesError(
            f"series {series_label(s.uid)}, row {s.rows[j]}: the target is empty; "
            "choose a --missing policy (ffill, interpolate, zero or drop)"
        )
    values, grid = values[first:], grid[first:]
    holes = holes[first:]
    if holes.any():
        if missing == "zero":
            values[holes] = 0.0
        elif missing == "ffill":
            index = np.where(~holes, np.arange(values.size), 0)
            values = values[np.maximum.accumulate(index)]
        else:  # interpolate, with the last value repeated past the last observation
            known = np.flatnonzero(~holes)
            values = np.interp(np.arange(values.size), known, values[known])
    return Prepared(values, grid, s.ds[-1].item(), step, n_gaps + n_empty)


def future_timestamps(prepared: Prepared, horizon: int, kind: str) -> np.ndarray:
    """The ``horizon`` timestamps after the last one, on the series' spacing."""
    step, last = prepared.step, prepared.last
    if step.freq is not None:
        import pandas as pd

        start = pd.Timestamp(int(last))
        if step.tz is not None:
            start = start.tz_localize("UTC").tz_convert(step.tz)
        grid = pd.date_range(start, periods=horizon + 1, freq=step.freq)
        if step.tz is not None:
            grid = grid.tz_convert("UTC").tz_localize(None)
        return grid.to_numpy(dtype="datetime64[ns]").astype(np.int64)[1:]
    ahead = np.arange(1, horizon + 1)
    if isinstance(step.delta, int) and isinstance(last, int | np.integer):
        return np.int64(last) + np.int64(step.delta) * ahead.astype(np.int64)
    return float(last) + float(step.delta) * ahead  # type: ignore[arg-type]
