"""Datasets: the project's synthetic generators and loaders for real series.

Synthetic series (seeded, no files):

* `recurring_oscillators`: sums of two sinusoids whose frequencies and
  amplitudes switch among a few regimes that recur in an irregular order.
* `switching_rotations`: a 4-D rotation system whose two frequencies move
  smoothly (Gaussian-blurred transitions) among recurring regimes, seen through a
  nonlinear observable.
* `drifting_van_der_pol`: a van der Pol oscillator whose nonlinearity ``mu``
  drifts away and returns, changing the limit cycle's period and shape.
* `stationary_control`: two sinusoids plus AR(1) noise, on which memory must
  not hurt.
* `regime_panel`: several series that share regimes at different scales and
  phases (for shared memory across series).

Real series (files found by `find_data_file`):

* `load_ilinet`: CDC ILINet, US national weighted ILI, weekly, from season
  2002/03. That season's first nine weeks (2002 w31-39) were not reported (0
  in the file) and are dropped, so the series starts 2002-09-29.
* `load_bike_sharing`: Capital Bikeshare hourly rentals (UCI). The file lacks
  165 hours. A missing hour means no rental was recorded: isolated night
  hours, and the storm shutdowns of January 2011, Irene (August 2011) and Sandy
  (October 2012). Such hours are filled with 0.
* `load_river`: river's bundled airline passengers and water flow.
* `load_ett`, `load_ett_channels`: ETDataset ETTh1 and ETTh2 (two electricity
  transformers, hourly 2016-07-01 to 2018-06-26, no gaps): the oil temperature
  ``OT`` alone, or all 7 channels (six loads, then ``OT``). CC BY-ND 4.0: the
  files are read as published, never rewritten.

>>> s = recurring_oscillators(n=600, seed=0)
>>> s.values.shape, s.season
((600,), None)
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import shutil
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ILINET_FILE = "ilinet_national.csv"
BIKE_FILE = "bike_sharing_hourly.csv"
BIKE_README = "bike_sharing_README.txt"
ETT_FILES = ("ETTh1.csv", "ETTh2.csv")
ETT_LICENSE = "ETDataset_LICENSE.txt"
ETT_CHANNELS = ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")
#: Hourly series: daily and weekly cycles.
HOURLY_SEASONS = (24, 168)

#: Public sources used by `fetch`.
BIKE_SOURCE = "https://archive.ics.uci.edu/static/public/275/bike+sharing+dataset.zip"
ILINET_SOURCE = "https://api.delphi.cmu.edu/epidata/fluview/?regions=nat&epiweeks=199740-{last}"
ETT_SOURCE = "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/{name}"
ETT_LICENSE_SOURCE = "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/LICENSE"


@dataclass(frozen=True)
class Series:
    """A named series with optional timestamps and seasonal periods.

    ``values`` is ``(n,)``, or ``(n, len(channels))`` for a multichannel series.
    ``season`` is the main period; ``seasons`` all of them (for MSTL), when the
    series has several (hourly data: a day and a week).
    """

    name: str
    values: np.ndarray
    season: int | None = None
    timestamps: np.ndarray | None = None
    description: str = ""
    regimes: np.ndarray | None = field(default=None, repr=False)
    unit: str = ""  # what a value measures, for axis labels
    seasons: tuple[int, ...] | None = None
    channels: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return int(self.values.shape[0])


# -- synthetic -------------------------------------------------------------------------


def _regime_sequence(
    rng: np.random.Generator, n: int, n_regimes: int, min_len: int, max_len: int
) -> np.ndarray:
    """Regime label per step: irregular order (no immediate repeats), irregular durations."""
    labels = np.empty(n, dtype=np.int64)
    k, current = 0, int(rng.integers(n_regimes))
    while k < n:
        length = int(rng.integers(min_len, max_len + 1))
        labels[k : k + length] = current
        k += length
        current = int(rng.choice([r for r in range(n_regimes) if r != current]))
    return labels


def _gaussian_smooth(values: np.ndarray, sigma: float, half_width: int) -> np.ndarray:
    """Gaussian-blurred copy of a 1-D series (edges padded with the end values)."""
    kernel = np.exp(-0.5 * (np.arange(-half_width, half_width + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    return np.convolve(np.pad(values, half_width, mode="edge"), kernel, mode="valid")


def recurring_oscillators(n: int = 6000, seed: int = 0, noise: float = 0.05) -> Series:
    """Two-tone oscillations switching among three recurring regimes (phase-continuous)."""
    rng = np.random.default_rng(seed)
    periods = np.array([[11.0, 29.0], [17.0, 7.3], [23.0, 13.0]])
    amplitudes = np.array([[1.0, 0.6], [1.6, 0.4], [0.7, 1.1]])
    labels = _regime_sequence(rng, n, 3, 200, 500)
    phase = np.cumsum(2 * np.pi / periods[labels], axis=0)
    values = np.sum(amplitudes[labels] * np.sin(phase), axis=1)
    values += noise * rng.standard_normal(n)
    return Series(
        "recurring_oscillators",
        values,
        description=recurring_oscillators.__doc__ or "",
        regimes=labels,
    )


def switching_rotations(n: int = 6000, seed: int = 1, noise: float = 0.03) -> Series:
    """4-D rotations whose frequencies move smoothly among recurring regimes; nonlinear readout."""
    rng = np.random.default_rng(seed)
    omegas = np.array([[0.21, 0.53], [0.37, 0.11], [0.62, 0.29]])
    labels = _regime_sequence(rng, n, 3, 250, 550)
    # Smooth transitions: the switching speeds blurred over ~30 steps around each switch.
    target = omegas[labels]
    smooth = np.column_stack([_gaussian_smooth(target[:, j], 10.0, 45) for j in range(2)])
    angle = np.cumsum(smooth, axis=0)
    x1, x2 = np.cos(angle[:, 0]), np.sin(angle[:, 0])
    x3, x4 = np.cos(angle[:, 1]), np.sin(angle[:, 1])
    values = np.tanh(1.5 * x1) + 0.5 * x3 + 0.3 * x2 * x4
    values += noise * rng.standard_normal(n)
    return Series(
        "switching_rotations", values, description=switching_rotations.__doc__ or "", regimes=labels
    )


def drifting_van_der_pol(n: int = 6000, seed: int = 2, noise: float = 0.02) -> Series:
    """Van der Pol oscillator whose ``mu`` drifts among recurring levels and returns."""
    rng = np.random.default_rng(seed)
    levels = np.array([0.3, 1.5, 3.0])
    labels = _regime_sequence(rng, n, 3, 300, 600)
    mu = _gaussian_smooth(levels[labels].astype(float), 15.0, 60)
    h, substeps = 0.05, 4  # sample every 0.2 time units
    state = np.array([2.0, 0.0])

    def field(s: np.ndarray, m: float) -> np.ndarray:
        return np.array([s[1], m * (1 - s[0] ** 2) * s[1] - s[0]])

    values = np.empty(n)
    for k in range(n):
        for _ in range(substeps):
            k1 = field(state, mu[k])
            k2 = field(state + 0.5 * h * k1, mu[k])
            k3 = field(state + 0.5 * h * k2, mu[k])
            k4 = field(state + h * k3, mu[k])
            state = state + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        values[k] = state[0]
    values += noise * rng.standard_normal(n)
    return Series(
        "drifting_van_der_pol",
        values,
        description=drifting_van_der_pol.__doc__ or "",
        regimes=labels,
    )


def stationary_control(n: int = 6000, seed: int = 3) -> Series:
    """Stationary control: two fixed sinusoids plus AR(1) noise (memory must not hurt)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    ar = np.empty(n)
    ar[0] = 0.0
    shocks = 0.1 * rng.standard_normal(n)
    for k in range(1, n):
        ar[k] = 0.7 * ar[k - 1] + shocks[k]
    values = np.sin(2 * np.pi * t / 24) + 0.5 * np.sin(2 * np.pi * t / 9.5 + 1.0) + ar
    return Series("stationary_control", values, description=stationary_control.__doc__ or "")


def regime_panel(
    n_series: int = 8, n: int = 2000, seed: int = 4, noise: float = 0.05
) -> list[Series]:
    """Series sharing three regimes, each at its own scale, level, phase and regime order."""
    rng = np.random.default_rng(seed)
    periods = np.array([[11.0, 29.0], [17.0, 7.3], [23.0, 13.0]])
    amplitudes = np.array([[1.0, 0.6], [1.6, 0.4], [0.7, 1.1]])
    panel = []
    for i in range(n_series):
        labels = _regime_sequence(rng, n, 3, 200, 500)
        phase = np.cumsum(2 * np.pi / periods[labels], axis=0) + rng.uniform(0, 2 * np.pi, 2)
        unit = np.sum(amplitudes[labels] * np.sin(phase), axis=1) + noise * rng.standard_normal(n)
        scale, level = 10 ** rng.uniform(-1, 3), rng.uniform(-5, 5) * 10 ** rng.uniform(0, 2)
        panel.append(Series(f"panel_{i}", level + scale * unit, regimes=labels))
    return panel


SYNTHETIC: dict[str, Callable[..., Series]] = {
    "recurring_oscillators": recurring_oscillators,
    "switching_rotations": switching_rotations,
    "drifting_van_der_pol": drifting_van_der_pol,
    "stationary_control": stationary_control,
}


# -- locating and loading real files ---------------------------------------------------


def data_dirs() -> list[Path]:
    """Folders searched for data files, in order: ``data/``, ``$EPISODIC_KOOPMAN_DATA``,
    then ``../shared/data`` beside the checkout (or the working directory)."""
    repo = Path(__file__).resolve().parents[2]
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


def load(name: str) -> Series:
    """Any built-in dataset by name (synthetic or real)."""
    if name in SYNTHETIC:
        return SYNTHETIC[name]()
    if name in REAL:
        return REAL[name]()
    raise ValueError(f"unknown dataset {name!r}; known: {sorted(SYNTHETIC) + sorted(REAL)}")


# -- fetching -------------------------------------------------------------------------


def copy_from(folder: str | Path, target: str | Path) -> list[Path]:
    """Copy the real data files found in ``folder`` into ``target``."""
    folder, target = Path(folder), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in (ILINET_FILE, BIKE_FILE, BIKE_README, *ETT_FILES, ETT_LICENSE):
        source = folder / name
        if source.is_file():
            shutil.copyfile(source, target / name)
            copied.append(target / name)
    if not copied:
        raise FileNotFoundError(f"no data files ({ILINET_FILE}, {BIKE_FILE}) in {folder}")
    return copied


def _download(url: str, timeout: float = 60.0) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "episodic-koopman data fetch"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def mmwr_week_start(year: int, week: int) -> dt.date:
    """Sunday starting MMWR week ``week`` of ``year`` (week 1 has at least 4 days in January)."""
    jan1 = dt.date(year, 1, 1)
    # Sunday on or before Jan 1; week 1 starts there if Jan 1 is Sun-Wed, else a week later.
    sunday = jan1 - dt.timedelta(days=(jan1.weekday() + 1) % 7)
    if (jan1.weekday() + 1) % 7 > 3:
        sunday += dt.timedelta(days=7)
    return sunday + dt.timedelta(weeks=week - 1)


def ilinet_rows_from_epidata(payload: dict) -> list[dict[str, str]]:
    """Convert a Delphi Epidata ``fluview`` response into this project's ILINet CSV rows."""
    if payload.get("result") != 1:
        raise ValueError(f"ILINet source returned no data: {payload.get('message')}")
    rows = []
    for item in sorted(payload["epidata"], key=lambda r: r["epiweek"]):
        year, week = divmod(int(item["epiweek"]), 100)
        season_start = year if week >= 31 else year - 1
        start = mmwr_week_start(year, week)
        first_week31 = mmwr_week_start(season_start, 31)
        rows.append(
            {
                "region_type": "National",
                "region": "National",
                "year": str(year),
                "week": str(week),
                "weighted_ili": str(item.get("wili") if item.get("wili") is not None else "NA"),
                "unweighted_ili": str(item.get("ili") if item.get("ili") is not None else "NA"),
                "ilitotal": str(item.get("num_ili", "NA")),
                "num_of_providers": str(item.get("num_providers", "NA")),
                "total_patients": str(item.get("num_patients", "NA")),
                "week_start": start.isoformat(),
                "season_week": str((start - first_week31).days // 7 + 1),
                "season": f"{season_start}/{(season_start + 1) % 100:02d}",
            }
        )
    return rows


def fetch(target: str | Path, source_dir: str | Path | None = None) -> list[Path]:
    """Put the real data files into ``target``: copied from ``source_dir``, else downloaded."""
    target = Path(target)
    if source_dir is not None:
        return copy_from(source_dir, target)
    import io
    import json

    target.mkdir(parents=True, exist_ok=True)
    written = []
    with zipfile.ZipFile(io.BytesIO(_download(BIKE_SOURCE))) as zf:
        (target / BIKE_FILE).write_bytes(zf.read("hour.csv"))
        (target / BIKE_README).write_bytes(zf.read("Readme.txt"))
    written += [target / BIKE_FILE, target / BIKE_README]
    last = dt.date.today().isocalendar()
    payload = json.loads(_download(ILINET_SOURCE.format(last=f"{last[0]}{last[1]:02d}")))
    rows = ilinet_rows_from_epidata(payload)
    with open(target / ILINET_FILE, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    written.append(target / ILINET_FILE)
    return written + fetch_ett(target)


def fetch_ett(target: str | Path) -> list[Path]:
    """Download ETTh1, ETTh2 and their licence into ``target``, byte for byte (CC BY-ND)."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name in ETT_FILES:
        (target / name).write_bytes(_download(ETT_SOURCE.format(name=name)))
        written.append(target / name)
    (target / ETT_LICENSE).write_bytes(_download(ETT_LICENSE_SOURCE))
    written.append(target / ETT_LICENSE)
    return written
