"""Reading long-format files (CSV, Parquet) or DataFrames into a `Panel` of series.

One row per observation: a series id (``unique_id``), a timestamp (``ds``) and a
target (``y``); a file without an id column is one series. Defects of one row (an
unparseable timestamp, a non-numeric target) are kept on the series they belong to,
to fail it later with the row named, not the whole file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BatchInputError, series_label

DEFAULT_ID, DEFAULT_TIME, DEFAULT_TARGET = "unique_id", "ds", "y"


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
            problem = f"series {series_label(uid_value)}, row {rows[j]}: timestamp is {what}"
        elif bad_y[take].any():
            j = take[np.argmax(bad_y[take])]
            problem = (
                f"series {series_label(uid_value)}, row {rows[j]}: target {target_col!r} is "
                f"{raw_y.iloc[j]!r}, not a number"
            )
        series.append(SeriesData(uid_value, i, times[take], y[take], rows[take], problem, tz))
    return Panel(series, kind, tz, len(frame), problems)


def exact_floats() -> dict[str, str]:
    """``read_csv`` arguments under which the floats read are exactly those written.

    pandas 3 parses floats exactly by default and deprecates ``float_precision``;
    pandas 2 needs ``"round_trip"`` for it.
    """
    import pandas as pd

    return {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
