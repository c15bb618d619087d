"""Real series: where their files are found, and how each is read into a `Series`."""

from __future__ import annotations

import csv
import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .series import Series

ILINET_FILE = "ilinet_national.csv"
BIKE_FILE = "bike_sharing_hourly.csv"
BIKE_README = "bike_sharing_README.txt"
ETT_FILES = ("ETTh1.csv", "ETTh2.csv")
ETT_LICENSE = "ETDataset_LICENSE.txt"
ETT_CHANNELS = ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")
#: Hourly series: daily and weekly cycles.
HOURLY_SEASONS = (24, 168)


def data_dirs() -> list[Path]:
    """Folders searched for data files, in order: ``data/``, ``$EPISODIC_KOOPMAN_DATA``,
    then ``../shared/data`` beside the checkout (or the working directory)."""
    repo = Path(__file__).resolve().parents[3]  # src/episodic_koopman/datasets/ -> checkout
    dirs = [repo / "data", Path.cwd() / "data"]
    if os.environ.get("EPISODIC_KOOPMAN_DATA"):
        dirs.append(Path(os.environ["EPISODIC_KOOPMAN_DATA"]))
    dirs += [repo.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def find_data_file(name: str) -> Path | None:
    """The first existing ``name`` in `data_dirs`, or ``None``."""
    for folder in data_dirs():
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def _require(name: str) -> Path:
    path = find_data_file(name)
    if path is None:
        searched = ", ".join(str(d) for d in data_dirs())
        raise FileNotFoundError(
            f"{name} not found (searched {searched}); run `episodic-koopman data fetch` "
            "or set EPISODIC_KOOPMAN_DATA"
        )
    return path


def load_ilinet(path: str | Path | None = None) -> Series:
    """US national weighted ILI (%), weekly, from 2002-09-29 (season 2002/03, week 40)."""
    path = Path(path) if path is not None else _require(ILINET_FILE)
    weeks: list[tuple[dt.date, float]] = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            if row["season"] < "2002/03":
                continue
            value = float(row["weighted_ili"]) if row["weighted_ili"] not in ("", "NA") else 0.0
            weeks.append((dt.date.fromisoformat(row["week_start"]), value))
    weeks.sort()
    # The unreported off-season weeks at the start of 2002/03 hold 0: drop them.
    first = next(i for i, (_, v) in enumerate(weeks) if v > 0)
    weeks = weeks[first:]
    stamps = np.array([np.datetime64(d, "D") for d, _ in weeks])
    values = np.array([v for _, v in weeks], dtype=np.float64)
    return Series(
        "ilinet",
        values,
        season=52,
        timestamps=stamps,
        description="CDC ILINet US national weighted ILI, weekly (public domain)",
        unit="weighted ILI (% of visits)",
    )


def load_bike_sharing(path: str | Path | None = None, target: str = "cnt") -> Series:
    """Capital Bikeshare hourly rentals, 2011-2012, missing hours filled with 0."""
    path = Path(path) if path is not None else _require(BIKE_FILE)
    observed: dict[np.datetime64, float] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            stamp = np.datetime64(row["dteday"]) + np.timedelta64(int(row["hr"]), "h")
            observed[stamp] = float(row[target])
    start, end = min(observed), max(observed)
    hours = np.arange(start, end + np.timedelta64(1, "h"), np.timedelta64(1, "h"))
    values = np.array([observed.get(h, 0.0) for h in hours], dtype=np.float64)
    return Series(
        "bike_sharing",
        values,
        season=24,
        seasons=HOURLY_SEASONS,
        timestamps=hours,
        description="UCI Bike Sharing hourly rentals, DC 2011-12 (CC BY 4.0)",
        unit="rentals per hour",
    )


def _read_ett(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps and the ``(n, 7)`` channels of an ETT file, checked to be hourly without gaps."""
    stamps: list[np.datetime64] = []
    rows: list[list[float]] = []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("date", *ETT_CHANNELS) if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} lacks the ETT columns {missing}")
        for row in reader:
            stamps.append(np.datetime64(row["date"].replace(" ", "T"), "h"))
            rows.append([float(row[c]) for c in ETT_CHANNELS])
    hours = np.array(stamps)
    if np.any(np.diff(hours) != np.timedelta64(1, "h")):
        raise ValueError(f"{path} is not hourly without gaps")
    return hours, np.array(rows, dtype=np.float64)


def load_ett(name: str = "ETTh1", path: str | Path | None = None) -> Series:
    """ETDataset ``ETTh1`` or ``ETTh2``: the transformer's oil temperature ``OT``, hourly."""
    hours, values = _read_ett(Path(path) if path is not None else _require(_ett_file(name)))
    return Series(
        name.lower(),
        values[:, ETT_CHANNELS.index("OT")].copy(),
        season=24,
        seasons=HOURLY_SEASONS,
        timestamps=hours,
        description=f"ETDataset {name}: oil temperature, hourly 2016-07 to 2018-06 (CC BY-ND 4.0)",
    )


def load_ett_channels(name: str = "ETTh1", path: str | Path | None = None) -> Series:
    """ETDataset ``ETTh1`` or ``ETTh2`` with all 7 channels (six loads, then ``OT``)."""
    hours, values = _read_ett(Path(path) if path is not None else _require(_ett_file(name)))
    return Series(
        f"{name.lower()}_channels",
        values,
        season=24,
        seasons=HOURLY_SEASONS,
        timestamps=hours,
        description=f"ETDataset {name}: 6 loads and oil temperature, hourly (CC BY-ND 4.0)",
        channels=ETT_CHANNELS,
    )


def _ett_file(name: str) -> str:
    if f"{name}.csv" not in ETT_FILES:
        raise ValueError(f"unknown ETT file {name!r}: use 'ETTh1' or 'ETTh2'")
    return f"{name}.csv"


def load_river(name: str) -> Series:
    """river's bundled series: ``"airline"`` (monthly passengers) or ``"water_flow"``."""
    from river import datasets

    if name == "airline":
        rows = list(datasets.AirlinePassengers())
        values = np.array([y for _, y in rows], dtype=np.float64)
        stamps = np.array([np.datetime64(x["month"].date(), "D") for x, _ in rows])
        return Series(
            "airline",
            values,
            season=12,
            timestamps=stamps,
            description="Monthly airline passengers 1949-1960 (river)",
            unit="passengers per month (thousands)",
        )
    if name == "water_flow":
        rows = list(datasets.WaterFlow())
        values = np.array([y for _, y in rows], dtype=np.float64)
        stamps = np.array([np.datetime64(x["Time"].replace(tzinfo=None), "s") for x, _ in rows])
        return Series(
            "water_flow",
            values,
            season=24,
            seasons=HOURLY_SEASONS,
            timestamps=stamps,
            description="Hourly water flow through a pipe (river)",
            unit="water flow",
        )
    raise ValueError(f"unknown river dataset {name!r}: use 'airline' or 'water_flow'")


REAL: dict[str, Callable[[], Series]] = {
    "ilinet": load_ilinet,
    "bike_sharing": load_bike_sharing,
    "airline": lambda: load_river("airline"),
    "water_flow": lambda: load_river("water_flow"),
    "etth1": lambda: load_ett("ETTh1"),
    "etth2": lambda: load_ett("ETTh2"),
    "etth1_channels": lambda: load_ett_channels("ETTh1"),
    "etth2_channels": lambda: load_ett_channels("ETTh2"),
}

#: The file each real dataset reads (river's need none).
REAL_FILES: dict[str, str] = {
    "ilinet": ILINET_FILE,
    "bike_sharing": BIKE_FILE,
    "etth1": "ETTh1.csv",
    "etth2": "ETTh2.csv",
    "etth1_channels": "ETTh1.csv",
    "etth2_channels": "ETTh2.csv",
}
