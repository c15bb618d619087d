"""Batch forecasting of many series: long-format files, shared memory, local or Dask workers.

The input is the long format of statsforecast and TimeGPT: one row per observation,
with a series id (``unique_id``), a timestamp (``ds``) and a target (``y``). A file
without an id column is one series. `read_long` reads CSV or Parquet into a `Panel`;
`forecast_panel` fits one `EpisodicKoopman` per series and forecasts it, and
`BatchResult.frame` gives the rows ``unique_id, ds, step, mean, lower, upper``.

Problems with the file as a whole (missing file or column, unknown type, no rows)
raise `BatchInputError`. Problems with one series (duplicated or irregular
timestamps, gaps under ``missing="error"``, a non-numeric target, too few
observations) fail that series only, with a message naming it and the row (rows are
counted from 1, header excluded); the other series are still forecast.

Memory scopes
-------------
``"series"``: each model keeps its own episodic memory. Series are independent, so
they are spread over workers in chunks, and the result does not depend on the
engine, the number of jobs or the chunking (bit for bit).

``"shared"``: the series are dealt round-robin into ``partitions`` (series ``i``
goes to partition ``i % partitions``). Each partition is one task: its models share
one `EpisodeMemory` and learn *in time order*, interleaved (at each timestamp, every
series of the partition observed then learns its value), so an episode is
recallable by any series of the partition once its horizon has passed, and never
earlier. Partitions do not talk to each other while they run: there is no global
lock, and none is needed. When all partitions are done, their memories are merged
into one (`merge_memories`): the episodes of every partition, in the order in which
they completed (timestamp, then partition, then id), truncated to the memory's
capacity oldest first. The merged memory can be saved (`save_memory`) and given to
the next run (``initial_memory``), where every partition starts from a copy of it.
So episodes cross partitions at run boundaries, and within a run inside a partition.
``partitions=1`` shares everything within the run, on one worker. Results depend on
the data and on ``partitions``, never on the engine or the number of jobs.

Engines
-------
``"local"``: ``jobs`` processes (``jobs=1`` runs in this process). ``"dask"``: a Dask
distributed cluster at ``scheduler``, or a ``LocalCluster`` of ``jobs`` single-threaded
worker processes when no address is given. Every worker pins BLAS and OpenMP to one
thread (`episodic_koopman.pin_threads`).

>>> import pandas as pd
>>> t = pd.date_range("2024-01-01", periods=120, freq="h")
>>> frame = pd.DataFrame({"unique_id": "a", "ds": t, "y": [float(i % 24) for i in range(120)]})
>>> panel = panel_from_frame(frame)
>>> result = forecast_panel(panel, BatchConfig(horizon=3, params={"delays": 8, "window": 32}))
>>> out = result.frame()
>>> list(out.columns)
['unique_id', 'ds', 'step', 'mean', 'lower', 'upper']
>>> out["ds"].dt.strftime("%H:%M").tolist(), out["step"].tolist()
(['00:00', '01:00', '02:00'], [1, 2, 3])
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .evaluation import coverage, mae, seasonal_naive_scale, smape
from .forecaster import MAX_HORIZON, EpisodicKoopman
from .memory import EpisodeMemory
from .stream import MISSING_POLICIES, missing_policy
from .threads import single_threaded

#: The library's missing-value policies (`episodic_koopman.stream`), plus two that need
#: the whole series: linear interpolation and zero filling.
MISSING = (*MISSING_POLICIES, "interpolate", "zero")
MEMORY_SCOPES = ("series", "shared")
ENGINES = ("local", "dask")
DEFAULT_ID, DEFAULT_TIME, DEFAULT_TARGET = "unique_id", "ds", "y"
MEMORY_FORMAT = "episodic-koopman-memory"
MEMORY_FORMAT_VERSION = 3  # 3: 8-bit index codes over fixed key bounds, windows copied


class BatchInputError(ValueError):
    """The input as a whole cannot be used (nothing can be forecast from it)."""


class SeriesError(ValueError):
    """One series cannot be forecast; the message names the series and, if any, the row."""


# -- reading -------------------------------------------------------------------------


@dataclass
class SeriesData:
    """One series as read: timestamps, target and the file rows they came from.

    ``ds`` holds int64 nanoseconds for datetime timestamps and int64 or float64
    otherwise. ``problem`` is a message for a row-level defect found while reading
    (an unparseable timestamp, a non-numeric target), which fails the series. ``tz``
    is the time zone of timezone-aware timestamps (``ds`` is then UTC): calendar
    spacings (days, months) are inferred on the local wall clock, across DST changes.
    """

    uid: Any
    index: int
    ds: np.ndarray
    y: np.ndarray
    rows: np.ndarray
    problem: str | None = None
    tz: str | None = None


@dataclass
class Panel:
    """Every series of an input, in order of first appearance."""

    series: list[SeriesData]
    time_kind: str  # "datetime" or "numeric"
    tz: str | None = None
    n_rows: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)  # (uid, reason) of unusable rows

    def __len__(self) -> int:
        return len(self.series)


def _label(uid: Any) -> str:
    return repr(uid) if isinstance(uid, str) else str(uid)


def read_long(
    path: str | Path,
    id_col: str | None = None,
    time_col: str = DEFAULT_TIME,
    target_col: str = DEFAULT_TARGET,
) -> Panel:
    """Read a CSV (``.csv``, ``.csv.gz``, ``.tsv``) or Parquet (``.parquet``, ``.pq``) file.

    ``id_col=None`` uses ``unique_id`` when the file has it, and otherwise reads the
    file as one series named after the file. A named ``id_col`` must exist.
    """
    import pandas as pd

    path = Path(path)
    name = path.name.lower()
    if not path.exists():
        raise BatchInputError(f"{path}: no such file")
    if path.is_dir():
        raise BatchInputError(f"{path} is a directory, not a CSV or Parquet file")
    kind = None
    if name.endswith((".csv", ".csv.gz", ".csv.bz2", ".csv.zst", ".tsv", ".txt")):
        kind = "csv"
    elif name.endswith((".parquet", ".pq")):
        kind = "parquet"
    if kind is None:
        raise BatchInputError(
            f"{path}: unknown file type {path.suffix or '(no extension)'!r}; "
            "use .csv (or .csv.gz, .tsv) or .parquet"
        )
    if path.stat().st_size == 0:
        raise BatchInputError(f"{path} is empty")
    try:
        if kind == "csv":
            sep = "\t" if name.endswith(".tsv") else ","
            header = pd.read_csv(path, sep=sep, nrows=0)
            # Ids and timestamps are read as text: ids like "007" stay as written, and
            # timestamps are parsed below with row-level error messages.
            as_text = {c: str for c in (id_col or DEFAULT_ID, time_col) if c in header.columns}
            frame = pd.read_csv(path, sep=sep, dtype=as_text, **exact_floats())
        else:
            frame = pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise BatchInputError(f"{path} is empty") from None
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise BatchInputError(f"{path}: cannot read it as {kind}: {exc}") from None
    except Exception as exc:  # pyarrow raises its own error types for corrupt files
        raise BatchInputError(f"{path}: cannot read it as {kind}: {exc}") from None
    return panel_from_frame(frame, id_col, time_col, target_col, default_id=path.name.split(".")[0])


def _parse_times(column: Any) -> tuple[np.ndarray, np.ndarray, str, str | None]:
    """Timestamps as int64 ns (datetimes) or numbers: ``(values, unparsed mask, kind, tz)``."""
    import pandas as pd

    missing = column.isna().to_numpy()
    if pd.api.types.is_datetime64_any_dtype(column):
        parsed = column
    else:
        numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
        text = column if numeric else column.astype("string")
        numbers = pd.to_numeric(text, errors="coerce")
        if not numbers[~missing].isna().any():
            values = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
            if np.all(values[~missing] % 1 == 0) and np.all(np.abs(values[~missing]) < 2**53):
                # Whole numbers (a step index, a year...) stay integers, so steps are exact.
                values = np.where(missing, 0, values).astype(np.int64)
            return values, missing, "numeric", None
        parsed = _to_datetime(text, missing)
    tz = None if parsed.dt.tz is None else str(parsed.dt.tz)
    if tz is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    unparsed = parsed.isna().to_numpy() & ~missing
    ns = parsed.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    return ns, unparsed | missing, "datetime", tz


def _to_datetime(text: Any, missing: np.ndarray) -> Any:
    """Parse timestamps: ISO 8601 (dates and date-times mixed), else per value."""
    import pandas as pd

    parsed = pd.to_datetime(text, errors="coerce", format="ISO8601")
    if not parsed[~missing].isna().any():
        return parsed
    try:
        return pd.to_datetime(text, errors="coerce", format="mixed")
    except ValueError:  # different UTC offsets: compare them in UTC
        return pd.to_datetime(text, errors="coerce", format="mixed", utc=True)


def panel_from_frame(
    frame: Any,
    id_col: str | None = None,
    time_col: str = DEFAULT_TIME,
    target_col: str = DEFAULT_TARGET,
    default_id: str = "series",
) -> Panel:
    """Split a long-format DataFrame into series (see `read_long`)."""
    import pandas as pd

    columns = [str(c) for c in frame.columns]
    if id_col is None:
        id_col = DEFAULT_ID if DEFAULT_ID in columns else None
    needed = [c for c in (id_col, time_col, target_col) if c is not None]
    absent = [c for c in needed if c not in columns]
    if absent:
        flag = {id_col: "--id", time_col: "--time", target_col: "--target"}
        hints = ", ".join(f"column {c!r} not found (rename it with {flag[c]})" for c in absent)
        raise BatchInputError(f"{hints}; the file has columns {columns}")
    if len(frame) == 0:
        raise BatchInputError("the file has a header but no rows")
    rows = np.arange(1, len(frame) + 1, dtype=np.int64)
    times, bad_time, kind, tz = _parse_times(frame[time_col].reset_index(drop=True))
    raw_y = frame[target_col].reset_index(drop=True)
    if pd.api.types.is_bool_dtype(raw_y):
        raw_y = raw_y.astype("object")
    y = pd.to_numeric(raw_y, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad_y = np.isnan(y) & raw_y.notna().to_numpy()
    problems: list[tuple[str, str]] = []
    if id_col is None:
        codes = np.zeros(len(frame), dtype=np.int64)
        uniques: Sequence[Any] = [default_id]
    else:
        ids = frame[id_col].reset_index(drop=True)
        codes, uniques = pd.factorize(ids, sort=False)
        no_id = codes < 0
        if no_id.any():
            first = int(rows[no_id][0])
            problems.append(
                (
                    "(no id)",
                    f"{int(no_id.sum())} rows have an empty {id_col!r} (first: row {first})",
                )
            )
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes[codes >= 0], minlength=len(uniques))
    starts = np.concatenate([[0], np.cumsum(counts)]) + int(np.count_nonzero(codes < 0))
    series: list[SeriesData] = []
    for i, uid in enumerate(uniques):
        take = order[starts[i] : starts[i + 1]]
        uid_value = uid.item() if isinstance(uid, np.generic) else uid
        problem = None
        if bad_time[take].any():
            j = take[np.argmax(bad_time[take])]
            raw_time = frame[time_col].iloc[j]
            what = "empty" if pd.isna(raw_time) else f"{raw_time!r}, not a timestamp"
            problem = f"series {_label(uid_value)}, row {rows[j]}: timestamp is {what}"
        elif bad_y[take].any():
            j = take[np.argmax(bad_y[take])]
            problem = (
                f"series {_label(uid_value)}, row {rows[j]}: target {target_col!r} is "
                f"{raw_y.iloc[j]!r}, not a number"
            )
        series.append(SeriesData(uid_value, i, times[take], y[take], rows[take], problem, tz))
    return Panel(series, kind, tz, len(frame), problems)


# -- timestamps and missing values ---------------------------------------------------


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


def exact_floats() -> dict[str, str]:
    """``read_csv`` arguments under which the floats read are exactly those written.

    pandas 3 parses floats exactly by default and deprecates ``float_precision``;
    pandas 2 needs ``"round_trip"`` for it.
    """
    import pandas as pd

    return {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}


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
        raise SeriesError(f"series {_label(s.uid)}: one timestamp is not enough to infer a spacing")
    diffs = np.diff(ds)
    if np.any(diffs == 0):
        j = int(np.argmax(diffs == 0))
        raise SeriesError(
            f"series {_label(s.uid)}, row {s.rows[j + 1]}: duplicated timestamp "
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
        f"series {_label(s.uid)}, row {s.rows[j + 1]}: irregular timestamp "
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
        raise SeriesError(f"series {_label(s.uid)}: every target value is empty")
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
            raise SeriesError(
                f"series {_label(s.uid)}, after row {s.rows[np.searchsorted(positions, k) - 1]}: "
                f"{n_gaps} missing timestamp(s) on its regular spacing of {step.describe(kind)} "
                f"(first: {_fmt_time(grid[k], kind, s.tz)}); choose a --missing policy "
                "(ffill, interpolate, zero or drop)"
            )
        j = int(np.argmax(empty))
        raise SeriesError(
            f"series {_label(s.uid)}, row {s.rows[j]}: the target is empty; "
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


# -- one series, one partition -------------------------------------------------------


@dataclass(frozen=True)
class BatchConfig:
    """What to forecast and how. ``params`` go to `EpisodicKoopman`."""

    horizon: int
    level: float = 0.9
    missing: str = "error"
    scope: str = "series"
    params: dict[str, Any] = field(default_factory=dict)
    save_dir: str | None = None
    partitions: int | None = None  # shared scope only; None: one per worker

    def validate(self) -> None:
        if isinstance(self.horizon, bool) or not isinstance(self.horizon, int):
            raise BatchInputError(f"horizon must be an integer, got {self.horizon!r}")
        if not 1 <= self.horizon <= MAX_HORIZON:
            raise BatchInputError(
                f"horizon must be between 1 and {MAX_HORIZON}, got {self.horizon}"
            )
        if not (isinstance(self.level, int | float) and 0 < self.level < 1):
            raise BatchInputError(f"level must lie strictly between 0 and 1, got {self.level!r}")
        try:
            missing_policy(self.missing, MISSING)
        except ValueError as exc:
            raise BatchInputError(str(exc)) from None
        if self.scope not in MEMORY_SCOPES:
            raise BatchInputError(
                f"memory scope must be one of {list(MEMORY_SCOPES)}, got {self.scope!r}"
            )
        if self.partitions is not None and self.partitions < 1:
            raise BatchInputError(f"partitions must be >= 1, got {self.partitions}")
        try:
            model = EpisodicKoopman.from_flat(self.params)
        except (TypeError, ValueError) as exc:
            raise BatchInputError(f"invalid model parameters: {exc}") from None
        if self.scope == "shared" and model.memory is None:
            raise BatchInputError("--memory-scope shared needs a model with memory (memory=true)")


@dataclass
class SeriesResult:
    """The outcome for one series: its forecast, or why there is none."""

    index: int
    uid: Any
    ok: bool
    reason: str | None = None
    ds: np.ndarray | None = None
    mean: np.ndarray | None = None
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    n_observations: int = 0
    n_filled: int = 0
    recall_applied: bool = False
    model_path: str | None = None


def min_observations(params: dict[str, Any]) -> int:
    """Observations a model with ``params`` needs before its first fit."""
    return EpisodicKoopman.from_flat(params).min_observations


_pinned = False


def _ensure_pinned() -> None:
    """Pin BLAS/OpenMP to one thread, once per worker process."""
    global _pinned
    if not _pinned:
        from .threads import pin_threads

        pin_threads()
        _pinned = True


def model_filename(uid: Any) -> str:
    """A safe, collision-free file name for a series' model.

    >>> model_filename("store 1/item"), model_filename("a")
    ('store_1_item-fcce658d.ekm', 'a.ekm')
    """
    text = str(uid)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", text)[:100]
    if safe.startswith("."):  # no hidden files
        safe = "_" + safe[1:]
    if safe != text or not safe:
        safe = f"{safe}-{hashlib.blake2b(text.encode(), digest_size=4).hexdigest()}"
    return f"{safe}.ekm"


def source_id(uid: Any) -> int:
    """A stable id for a series in a shared memory (the same in every process and run)."""
    digest = hashlib.blake2b(str(uid).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 2


def _checked(s: SeriesData, kind: str, cfg: BatchConfig) -> Prepared:
    prepared = prepare_series(s, kind, cfg.missing)
    needed = min_observations(cfg.params)
    if prepared.values.size < needed:
        raise SeriesError(
            f"series {_label(s.uid)}: too short, {prepared.values.size} observations; "
            f"the model needs at least {needed} (delays + min(window, 2 * delays))"
        )
    return prepared


def _finish(
    s: SeriesData, model: EpisodicKoopman, prepared: Prepared, kind: str, cfg: BatchConfig
) -> SeriesResult:
    forecast = model.predict(cfg.horizon, level=cfg.level)
    path = None
    if cfg.save_dir is not None:
        path = os.path.join(cfg.save_dir, model_filename(s.uid))
        model.save(path)
    return SeriesResult(
        s.index,
        s.uid,
        True,
        ds=future_timestamps(prepared, cfg.horizon, kind),
        mean=np.asarray(forecast.mean, dtype=np.float64),
        lower=np.asarray(forecast.lower, dtype=np.float64),
        upper=np.asarray(forecast.upper, dtype=np.float64),
        n_observations=model.n_observations,
        n_filled=prepared.n_filled,
        recall_applied=forecast.recall_applied,
        model_path=path,
    )


def _failure(s: SeriesData, exc: Exception) -> SeriesResult:
    if isinstance(exc, SeriesError):
        reason = str(exc)
    elif isinstance(exc, ValueError | TypeError):
        reason = f"series {_label(s.uid)}: {exc}"
    else:  # not a user error: keep the type so that it can be reported as a bug
        reason = f"series {_label(s.uid)}: internal error {type(exc).__name__}: {exc}"
    return SeriesResult(s.index, s.uid, False, reason=reason)


def forecast_one(s: SeriesData, kind: str, cfg: BatchConfig) -> SeriesResult:
    """Fit a fresh model (its own memory) on one series and forecast it."""
    try:
        prepared = _checked(s, kind, cfg)
        model = EpisodicKoopman.from_flat(cfg.params)
        model.learn_many(prepared.values)
        return _finish(s, model, prepared, kind, cfg)
    except Exception as exc:
        return _failure(s, exc)


def forecast_chunk(chunk: list[SeriesData], kind: str, cfg: BatchConfig) -> list[SeriesResult]:
    """`forecast_one` over a chunk of independent series (one worker task)."""
    return [forecast_one(s, kind, cfg) for s in chunk]


def new_memory(params: dict[str, Any]) -> EpisodeMemory:
    """An empty memory that univariate models built with ``params`` can share."""
    return EpisodicKoopman.from_flat(params).new_memory()


@dataclass
class PartitionOutput:
    """What a shared-scope partition sends back: forecasts and the episodes it added."""

    results: list[SeriesResult]
    keys: np.ndarray
    records: dict[str, np.ndarray]
    completed_at: np.ndarray  # timestamp at which each episode's horizon passed (ds encoding)
    partition: int
    sources: dict[int, Any]


def forecast_partition(
    chunk: list[SeriesData],
    kind: str,
    cfg: BatchConfig,
    partition: int = 0,
    initial: tuple[dict[str, Any], dict[str, np.ndarray]] | None = None,
) -> PartitionOutput:
    """Fit the series of one partition on one shared memory, in time order, and forecast.

    At each timestamp (in the union of the series' grids) every series observed then
    learns its value; a series whose spacing differs from the others simply has
    fewer ticks. ``initial`` (a memory state) is the memory the partition starts from.
    """
    memory = new_memory(cfg.params)
    if initial is not None:
        memory.set_state(*initial)
    first_new = memory.next_id
    results: dict[int, SeriesResult] = {}
    live: list[tuple[SeriesData, Prepared, EpisodicKoopman]] = []
    for s in chunk:
        try:
            prepared = _checked(s, kind, cfg)
            model = EpisodicKoopman.from_flat(cfg.params)
            model.attach_memory(memory, source=source_id(s.uid))
            live.append((s, prepared, model))
        except Exception as exc:
            results[s.index] = _failure(s, exc)
    # Every (timestamp, series) event, in time order; ties in series order.
    times = np.concatenate([p.grid for _, p, _ in live]) if live else np.zeros(0)
    owner = np.concatenate([np.full(p.grid.size, k) for k, (_, p, _) in enumerate(live)])
    position = np.concatenate([np.arange(p.grid.size) for _, p, _ in live]) if live else owner
    order = np.lexsort((owner, times)) if live else owner
    failed: set[int] = set()
    for k, j in zip(owner[order].tolist(), position[order].tolist(), strict=True):
        if k in failed:
            continue
        s, prepared, model = live[k]
        try:
            model.learn_one(float(prepared.values[j]))
        except Exception as exc:
            failed.add(k)
            results[s.index] = _failure(s, exc)
    for k, (s, prepared, model) in enumerate(live):
        if k not in failed:
            try:
                results[s.index] = _finish(s, model, prepared, kind, cfg)
            except Exception as exc:
                results[s.index] = _failure(s, exc)
    # Episodes added in this run, with the timestamp at which each became recallable.
    ids = memory.live_ids()
    ids = ids[ids >= first_new]
    records = memory.get(ids)
    horizon = EpisodicKoopman.from_flat(cfg.params).episode_horizon
    grids = {source_id(s.uid): p.grid for s, p, _ in live}
    completed = np.array(
        [
            grids[int(src)][min(int(o) + horizon, grids[int(src)].size - 1)]
            for src, o in zip(records.get("source", []), records.get("origin", []), strict=True)
        ],
        dtype=times.dtype if live else np.float64,  # int64 ns stay exact
    )
    return PartitionOutput(
        [results[s.index] for s in chunk],
        memory.keys(ids).copy(),
        {name: column.copy() for name, column in records.items()},
        completed,
        partition,
        {source_id(s.uid): s.uid for s in chunk},
    )


# -- merging shared memories ---------------------------------------------------------


def merge_memories(
    params: dict[str, Any],
    outputs: Sequence[PartitionOutput],
    initial: tuple[dict[str, Any], dict[str, np.ndarray]] | None = None,
) -> EpisodeMemory:
    """One memory from the episodes of every partition (and of ``initial`` first).

    Episodes enter in the order in which they completed: by completion timestamp,
    then partition, then their id within the partition. The memory's FIFO capacity
    keeps the newest. The order depends only on the data and the partitioning, so
    the merged memory is the same whichever engine ran the partitions.
    """
    merged = new_memory(params)
    if initial is not None:
        merged.set_state(*initial)
    entries = [
        (t, out.partition, i, out)
        for out in outputs
        for i, t in enumerate(out.completed_at.tolist())
    ]
    entries.sort(key=lambda e: (e[0], e[1], e[2]))
    for _, _, i, out in entries:
        merged.add(out.keys[i], {name: column[i] for name, column in out.records.items()})
    return merged


def save_memory(memory: EpisodeMemory, path: str | Path, sources: dict[int, Any]) -> None:
    """Write a (merged) shared memory: a ZIP of a JSON manifest and an npz of its state."""
    path = Path(path)
    meta, arrays = memory.get_state()
    manifest = {
        "format": MEMORY_FORMAT,
        "format_version": MEMORY_FORMAT_VERSION,
        "dim": memory.dim,
        "capacity": memory.capacity,
        "hnsw_threshold": memory.hnsw_threshold,
        "state": meta,
        "sources": {str(k): str(v) for k, v in sources.items()},
    }
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr("manifest.json", json.dumps(manifest))
            zf.writestr("memory.npz", buffer.getvalue())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_memory(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
    """Read a memory written by `save_memory`: ``(state meta, state arrays, manifest)``."""
    try:
        with zipfile.ZipFile(path) as zf:
            manifest = json.loads(zf.read("manifest.json"))
            with np.load(io.BytesIO(zf.read("memory.npz")), allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError):
        raise BatchInputError(f"{path} is not a shared-memory file") from None
    if manifest.get("format") != MEMORY_FORMAT:
        raise BatchInputError(f"{path} is not a shared-memory file")
    if manifest.get("format_version") != MEMORY_FORMAT_VERSION:
        raise BatchInputError(
            f"{path} has shared-memory format version {manifest.get('format_version')}; "
            f"this library reads version {MEMORY_FORMAT_VERSION}: rebuild the memory"
        )
    return manifest["state"], arrays, manifest


# -- engines -------------------------------------------------------------------------


def _local_map(
    fn: Callable[..., Any], tasks: list[tuple[Any, ...]], jobs: int
) -> Iterator[tuple[int, Any]]:
    """``(task index, result)`` as tasks finish, in ``jobs`` processes (or here)."""
    if jobs <= 1:
        # In the caller's process: limit threads for the run only, not for good.
        with single_threaded():
            for i, args in enumerate(tasks):
                yield i, fn(*args)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn, not fork: forking a process that has started OpenMP or BLAS threads can hang.
    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(_apply, fn, list(args)): i for i, args in enumerate(tasks)}
        for future in as_completed(futures):
            yield futures[future], future.result()


def _dask_map(
    fn: Callable[..., Any],
    tasks: list[tuple[Any, ...]],
    jobs: int,
    scheduler: str | None,
    timeout: float,
    info: dict[str, Any],
) -> Iterator[tuple[int, Any]]:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise BatchInputError(
            "the dask engine needs the batch extra: pip install 'episodic-koopman[batch]'"
        ) from None
    cluster = None
    try:
        if scheduler is None:
            cluster = LocalCluster(
                n_workers=max(1, jobs),
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",  # any free port: never clash with a running cluster
                silence_logs=40,  # logging.ERROR
            )
            client = Client(cluster)
        else:
            client = Client(scheduler, timeout=timeout)
    except OSError as exc:
        if cluster is not None:
            cluster.close()
        raise BatchInputError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    try:
        info["workers"] = len(client.scheduler_info()["workers"])
        # Scatter the data first: each task then ships a small reference, not its series.
        payloads = client.scatter([list(args) for args in tasks])
        futures = [
            client.submit(_apply, fn, payload, key=f"ek-batch-{i}-{time.time_ns()}")
            for i, payload in enumerate(payloads)
        ]
        index = {f.key: i for i, f in enumerate(futures)}
        for future in as_completed(futures):
            yield index[future.key], future.result()
            future.release()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _apply(fn: Callable[..., Any], args: list[Any]) -> Any:
    """Run a task in a worker process, whose threads are pinned once and for all."""
    _ensure_pinned()
    return fn(*args)


# -- the whole batch -----------------------------------------------------------------


@dataclass
class BatchResult:
    """Every series' outcome, in input order, with timings and the merged shared memory."""

    results: list[SeriesResult]
    kind: str
    tz: str | None
    seconds: float
    engine: str
    workers: int
    scope: str
    partitions: int | None = None
    memory: EpisodeMemory | None = None
    sources: dict[int, Any] = field(default_factory=dict)
    input_problems: list[tuple[str, str]] = field(default_factory=list)

    @property
    def done(self) -> list[SeriesResult]:
        return [r for r in self.results if r.ok]

    @property
    def failed(self) -> list[SeriesResult]:
        return [r for r in self.results if not r.ok]

    @property
    def throughput(self) -> float:
        """Series forecast per second (wall clock)."""
        return len(self.done) / self.seconds if self.seconds > 0 else float("nan")

    def frame(self) -> Any:
        """The forecasts as a DataFrame: ``unique_id, ds, step, mean, lower, upper``."""
        import pandas as pd

        done = self.done
        h = done[0].mean.size if done else 0  # type: ignore[union-attr]
        columns: dict[str, Any] = {
            "unique_id": np.repeat(np.array([r.uid for r in done], dtype=object), h),
            "ds": np.concatenate([r.ds for r in done]) if done else np.zeros(0),  # type: ignore[misc]
            "step": np.tile(np.arange(1, h + 1, dtype=np.int64), len(done)),
        }
        for name in ("mean", "lower", "upper"):
            columns[name] = np.concatenate([getattr(r, name) for r in done]) if done else []
        frame = pd.DataFrame(columns)
        if self.kind == "datetime":
            stamps = pd.to_datetime(frame["ds"].to_numpy(dtype=np.int64))
            if self.tz is not None:
                stamps = stamps.tz_localize("UTC").tz_convert(self.tz)
            frame["ds"] = stamps
        return frame


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def forecast_panel(
    panel: Panel,
    cfg: BatchConfig,
    engine: str = "local",
    jobs: int = 1,
    scheduler: str | None = None,
    chunk_size: int | None = None,
    initial_memory: str | Path | None = None,
    connect_timeout: float = 10.0,
    on_progress: Callable[[int, list[SeriesResult]], None] | None = None,
) -> BatchResult:
    """Forecast every series of ``panel`` (see the module docstring for scopes and engines).

    ``on_progress(n_series, results)`` is called as each task finishes.
    ``connect_timeout``: seconds to wait for a Dask scheduler given by address.
    """
    cfg.validate()
    if engine not in ENGINES:
        raise BatchInputError(f"engine must be one of {list(ENGINES)}, got {engine!r}")
    if jobs < 1:
        raise BatchInputError(f"jobs must be >= 1, got {jobs}")
    if cfg.save_dir is not None:
        Path(cfg.save_dir).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    initial = None
    if initial_memory is not None:
        if cfg.scope != "shared":
            raise BatchInputError("an initial memory needs --memory-scope shared")
        meta, arrays, manifest = load_memory(initial_memory)
        expected = new_memory(cfg.params).dim
        if manifest["dim"] != expected:
            raise BatchInputError(
                f"{initial_memory} has keys of length {manifest['dim']}, these models need "
                f"{expected}: the memory was built with other delays, max_rank or mode_delays"
            )
        initial = (meta, arrays)
    series = panel.series
    workers = max(1, jobs)
    if cfg.scope == "series":
        size = chunk_size or max(1, min(32, math.ceil(len(series) / (workers * 8))))
        tasks = [(chunk, panel.time_kind, cfg) for chunk in _chunks(series, size)]
        fn: Callable[..., Any] = forecast_chunk
        partitions = None
    else:
        if cfg.partitions is None and engine == "dask" and scheduler is not None:
            # The cluster's size is not ours to guess, and results depend on partitions.
            raise BatchInputError(
                "with --scheduler, give --partitions for the shared scope (for example the "
                "number of worker processes): results depend on it"
            )
        partitions = cfg.partitions or workers
        groups = [series[p::partitions] for p in range(partitions)]
        tasks = [(g, panel.time_kind, cfg, p, initial) for p, g in enumerate(groups) if g]
        fn = forecast_partition
    info: dict[str, Any] = {}  # what the engine found out (Dask: the number of workers)
    if engine == "dask":
        stream = _dask_map(fn, tasks, jobs, scheduler, connect_timeout, info)
    else:
        stream = _local_map(fn, tasks, jobs)
    by_index: dict[int, SeriesResult] = {}
    outputs: list[PartitionOutput] = []
    for _, output in stream:
        results = output if cfg.scope == "series" else output.results
        if cfg.scope == "shared":
            outputs.append(output)
        for r in results:
            by_index[r.index] = r
        if on_progress is not None:
            on_progress(len(results), results)
    memory, sources = None, {}
    if cfg.scope == "shared":
        outputs.sort(key=lambda o: o.partition)
        memory = merge_memories(cfg.params, outputs, initial)
        for o in outputs:
            sources.update(o.sources)
    ordered = [by_index[s.index] for s in series]
    if cfg.save_dir is not None:
        write_model_index(Path(cfg.save_dir), ordered)
    return BatchResult(
        ordered,
        panel.time_kind,
        panel.tz,
        time.perf_counter() - started,
        engine,
        info.get("workers", workers),
        cfg.scope,
        partitions,
        memory,
        sources,
        list(panel.problems),
    )


def write_model_index(folder: Path, results: Sequence[SeriesResult]) -> None:
    """``models.csv`` in ``folder``: which file holds which series' model."""
    import csv

    with open(folder / "models.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["unique_id", "file"])
        for r in results:
            if r.model_path is not None:
                writer.writerow([r.uid, Path(r.model_path).name])


def write_forecasts(frame: Any, output: str | Path | None) -> None:
    """Write to ``output`` (``.parquet``/``.pq`` as Parquet, otherwise CSV); ``"-"``: stdout."""
    import sys

    if output is None or str(output) == "-":
        frame.to_csv(sys.stdout, index=False)
        return
    path = Path(output)
    if path.name.lower().endswith((".parquet", ".pq")):
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)


# -- shared vs series, measured ------------------------------------------------------


@dataclass
class PanelBacktest:
    """Scores of a multi-series backtest, per memory scope (see `panel_backtest`)."""

    horizon: int
    scores: dict[str, dict[str, dict[str, float]]]  # scope -> group -> metric -> value

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for scope, groups in self.scores.items():
            for group, metrics in groups.items():
                out.append({"scope": scope, "series": group, **metrics})
        return out


def panel_backtest(
    panel: Sequence[np.ndarray],
    horizon: int,
    start: int,
    stride: int = 1,
    scopes: Sequence[str] = MEMORY_SCOPES,
    params: dict[str, Any] | None = None,
    offsets: Sequence[int] | None = None,
    level: float = 0.9,
    season: int | None = None,
) -> PanelBacktest:
    """Rolling-origin backtest of many series that progress in time together.

    Series ``i`` starts at global time ``offsets[i]`` (0 by default: a late
    ``offset`` makes a *new* series joining the others). At each global time ``t``,
    every active series learns its next value; then each series at one of its origins
    (local index ``o >= start``, every ``stride``, while ``o + horizon`` is observed)
    forecasts ``horizon`` steps. With ``"shared"`` all models share one memory, so a
    recall at time ``t`` sees exactly the episodes of any series completed by ``t``.

    Scores per scope, over all series (``"all"``), the series that join late
    (``"new"``, if any), and the others (``"old"``): ``mase`` (each series' MAE over
    its own in-sample seasonal naive MAE on its first ``start`` values, averaged over
    series), ``smape``, ``coverage`` of the ``level`` intervals, and ``recall_rate``.

    >>> t = np.arange(400.0)
    >>> panel = [np.sin(2 * np.pi * t / 20), 5 + 3 * np.sin(2 * np.pi * t / 20 + 1)]
    >>> bt = panel_backtest(panel, 4, start=100, stride=25, params={"delays": 8, "window": 32})
    >>> sorted(bt.scores), sorted(bt.scores["shared"]["all"])
    (['series', 'shared'], ['coverage', 'mase', 'recall_rate', 'smape'])
    """
    params = dict(params or {})
    values = [np.asarray(v, dtype=np.float64) for v in panel]
    offsets = list(offsets) if offsets is not None else [0] * len(values)
    if len(offsets) != len(values):
        raise ValueError("offsets must give one start time per series")
    origins = [np.arange(start, v.size - horizon, stride) for v in values]
    if any(o.size == 0 for o in origins):
        raise ValueError("every series needs at least one origin: shorter start or horizon")
    groups = {"all": list(range(len(values)))}
    if any(offsets):
        groups["new"] = [i for i, o in enumerate(offsets) if o > 0]
        groups["old"] = [i for i, o in enumerate(offsets) if o == 0]
    end = max(o + v.size for o, v in zip(offsets, values, strict=True))
    scores: dict[str, dict[str, dict[str, float]]] = {}
    for scope in scopes:
        if scope not in MEMORY_SCOPES:
            raise ValueError(f"scope must be one of {list(MEMORY_SCOPES)}, got {scope!r}")
        models = [EpisodicKoopman.from_flat(params) for _ in values]
        if scope == "shared":
            memory = new_memory(params)
            for i, model in enumerate(models):
                model.attach_memory(memory, source=i)
        preds = [np.empty((o.size, horizon, 3)) for o in origins]
        recalls = [0] * len(values)
        next_origin = [0] * len(values)
        with single_threaded():
            for t in range(end):
                for i, model in enumerate(models):
                    k = t - offsets[i]
                    if not 0 <= k < values[i].size:
                        continue
                    model.learn_one(float(values[i][k]))
                    j = next_origin[i]
                    if j < origins[i].size and origins[i][j] == k:
                        f = model.predict(horizon, level=level)
                        preds[i][j] = np.stack([f.mean, f.lower, f.upper], axis=1)
                        recalls[i] += int(f.recall_applied)
                        next_origin[i] += 1
        per_series = []
        for i, v in enumerate(values):
            truth = np.stack([v[o + 1 : o + 1 + horizon] for o in origins[i]])
            mean, lower, upper = preds[i][..., 0], preds[i][..., 1], preds[i][..., 2]
            scale = seasonal_naive_scale(v[:start], season)
            per_series.append(
                {
                    "mase": mae(truth, mean) / scale,
                    "smape": smape(truth, mean),
                    "coverage": coverage(truth, lower, upper),
                    "recall_rate": recalls[i] / origins[i].size,
                }
            )
        scores[scope] = {
            group: {
                metric: float(np.mean([per_series[i][metric] for i in members]))
                for metric in per_series[0]
            }
            for group, members in groups.items()
        }
    return PanelBacktest(horizon, scores)
