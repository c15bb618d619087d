"""Measuring helpers shared by the benchmarks: process memory and I/O, sizes, timing, tables.

Memory and I/O come from ``/proc`` (Linux), so they cover everything a process
holds or writes, native libraries (FAISS, BLAS, SQLite) included, not only what
Python's allocators see.
"""

from __future__ import annotations

import gc
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

MIB = 1024 * 1024


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of a process (this one by default), in bytes."""
    fields = Path(f"/proc/{pid or 'self'}/statm").read_text().split()
    return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")


def tree_rss_bytes(pids: list[int]) -> int:
    """Resident set size of processes (a server and its shard processes), in bytes."""
    return sum(rss_bytes(pid) for pid in pids)


def settled_rss_bytes() -> int:
    """This process's RSS after a full garbage collection (so dead cycles are not counted)."""
    gc.collect()
    return rss_bytes()


def io_counters(pid: int | None = None) -> dict[str, int]:
    """``/proc/<pid>/io``: ``write_bytes`` is what reached the block layer (page cache
    dirtied by this process), ``wchar`` every byte passed to write(), sockets included."""
    text = Path(f"/proc/{pid or 'self'}/io").read_text()
    return {name: int(value) for name, value in (line.split(": ") for line in text.splitlines())}


def tree_io_counters(pids: list[int]) -> dict[str, int]:
    """`io_counters` summed over processes (a server and its shard processes)."""
    total: dict[str, int] = {}
    for pid in pids:
        for name, value in io_counters(pid).items():
            total[name] = total.get(name, 0) + value
    return total


def dir_bytes(path: str | Path) -> int:
    """Total apparent size of the regular files under ``path`` (0 if it does not exist)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass  # removed while walking (a snapshot replaced by a newer one)
    return total


def numpy_nbytes(obj: Any) -> int:
    """Bytes of the numpy buffers reachable from ``obj`` through attributes and containers,
    each underlying buffer counted once (views share their base's). Native objects that
    hold their own memory (a FAISS index) are not seen: compare with `rss_bytes`."""
    seen_objects: set[int] = set()
    seen_buffers: set[int] = set()
    total = 0
    stack = [obj]
    while stack:
        item = stack.pop()
        if id(item) in seen_objects:
            continue
        seen_objects.add(id(item))
        if isinstance(item, np.ndarray):
            base = item
            while isinstance(base.base, np.ndarray):
                base = base.base
            if id(base) not in seen_buffers:
                seen_buffers.add(id(base))
                total += base.nbytes
            if item.dtype == object:
                stack.extend(item.ravel().tolist())
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
        elif isinstance(item, str | bytes | int | float | complex | bool | type) or item is None:
            continue
        else:
            if hasattr(item, "__dict__"):
                stack.append(vars(item))
            for slot in getattr(type(item), "__slots__", ()):
                if hasattr(item, slot):
                    stack.append(getattr(item, slot))
    return total


def interleaved_medians(runs: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Median of ``repeats`` results of each run, run in turns (A, B, A, B, ...) so that
    the noise of a shared machine falls on all of them alike."""
    results: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            results[name].append(run())
    return {name: statistics.median(values) for name, values in results.items()}


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q`` quantile (0..1) by the nearest-rank rule; NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``."""

    def __enter__(self) -> Timer:
        self.started = time.perf_counter()
        self.seconds = math.nan
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started


@dataclass
class Row:
    """One line of a results table.

    ``ratio`` compares ``value`` with the ``baseline`` measured in the same run: a
    speed-up (baseline / value) when ``speedup``, else value / baseline. ``bar`` and
    ``goal`` apply to the ratio when ``judge == "ratio"``, else to the value (in its
    unit); ``better`` says which way is good.
    """

    measure: str
    value: float
    unit: str
    baseline: float | None = None
    bar: float | None = None
    goal: float | None = None
    better: str = "lower"
    judge: str = "value"
    speedup: bool = False
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or not self.value or not self.baseline:
            return None
        return self.baseline / self.value if self.speedup else self.value / self.baseline

    @property
    def judged(self) -> float | None:
        return self.ratio if self.judge == "ratio" else self.value

    def verdict(self) -> str:
        judged = self.judged
        if judged is None or self.bar is None or not math.isfinite(judged):
            return ""

        def meets(limit: float) -> bool:
            return judged >= limit if self.better == "higher" else judged <= limit

        if self.goal is not None and meets(self.goal):
            return "goal met"
        return "bar met" if meets(self.bar) else "MISSES bar"

    def bar_factor(self) -> float | None:
        """How far the judged number is from the bar (>1: that many times worse)."""
        judged = self.judged
        if judged is None or not self.bar or not judged or not math.isfinite(judged):
            return None
        return self.bar / judged if self.better == "higher" else judged / self.bar


def _fmt(x: float | None, unit: str = "") -> str:
    if x is None or not math.isfinite(x):
        return "-"
    magnitude = abs(x)
    if magnitude >= 100:
        text = f"{x:,.0f}"
    elif magnitude >= 10:
        text = f"{x:.1f}"
    elif magnitude >= 0.1:
        text = f"{x:.2f}"
    else:
        text = f"{x:.3g}"
    return f"{text} {unit}".strip()


def _fmt_ratio(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x:.1f}x" if x >= 10 else f"{x:.2f}x" if x >= 0.1 else f"{x:.3g}x"


def _limit(row: Row, x: float | None) -> str:
    if x is None:
        return "-"
    if row.judge == "ratio":
        return f"{x:g}x" if x >= 1 else f"1/{1 / x:g}"
    return _fmt(x, row.unit)


def _cells(row: Row) -> tuple[str, ...]:
    return (
        row.measure,
        _fmt(row.value, row.unit),
        _fmt(row.baseline, row.unit),
        _fmt_ratio(row.ratio),
        _limit(row, row.bar),
        _limit(row, row.goal),
        _fmt_ratio(row.bar_factor()),
        row.verdict(),
    )


def print_table(title: str, rows: list[Row]) -> None:
    """Measure, value, baseline, ratio, bar, goal, distance to the bar, verdict, note."""
    header = ("measure", "value", "baseline", "ratio", "bar", "goal", "vs bar", "verdict")
    lines = [_cells(r) for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]

    def join(cells: tuple[str, ...]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(f"\n{title}")
    print(join(header))
    print("-" * (sum(widths) + 2 * (len(widths) - 1)))
    for row, line in zip(rows, lines, strict=True):
        print(join(line))
        if row.note:
            print(f"    {row.note}")
    print("(vs bar: how many times the bar's value the measured one is, in the bad direction)")


def write_json(path: str | Path, meta: dict[str, Any], rows: list[Row]) -> None:
    """The rows (with ratio and verdict) and the run's settings, for comparing runs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        **meta,
        "rows": [
            {**asdict(r), "ratio": r.ratio, "vs_bar": r.bar_factor(), "verdict": r.verdict()}
            for r in rows
        ],
    }
    path.write_text(json.dumps(payload, indent=2, allow_nan=True) + "\n")
