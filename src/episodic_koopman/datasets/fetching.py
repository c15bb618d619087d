"""Getting the real data files: copied from a folder, or downloaded from their sources."""

from __future__ import annotations

import csv
import datetime as dt
import shutil
import urllib.request
import zipfile
from pathlib import Path

from .real_data import BIKE_FILE, BIKE_README, ETT_FILES, ETT_LICENSE, ILINET_FILE

#: Public sources used by `fetch`.
BIKE_SOURCE = "https://archive.ics.uci.edu/static/public/275/bike+sharing+dataset.zip"
ILINET_SOURCE = "https://api.delphi.cmu.edu/epidata/fluview/?regions=nat&epiweeks=199740-{last}"
ETT_SOURCE = "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/{name}"
ETT_LICENSE_SOURCE = "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/LICENSE"


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
