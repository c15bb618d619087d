"""``episodic-koopman backtest``: rolling-origin comparison of ek against its peers."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .params import parse_params

DEFAULT_MODELS = "ek,ek-nomem,naive,snaive,holtwinters,snarimax"


def register(app: typer.Typer) -> None:
    app.command()(backtest)


def _fail(message: str) -> None:
    # Escaped: messages quote user input and pip extras ('episodic-koopman[plot]').
    Console(stderr=True).print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code=2)


def read_series_csv(path: Path, target: str, time: str | None) -> np.ndarray:
    """The ``target`` column of a CSV as floats, checked row by row (and by ``time`` order)."""
    try:
        fh = open(path, newline="")
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    with fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames:
            raise ValueError(f"{path} is empty")
        for column in (target, time):
            if column is not None and column not in reader.fieldnames:
                raise ValueError(
                    f"{path} has no column {column!r}; columns: {', '.join(reader.fieldnames)}"
                )
        values: list[float] = []
        stamps: list[str] = []
        for row_number, row in enumerate(reader, start=2):
            raw = (row[target] or "").strip()
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(
                    f"{path}, line {row_number}: {target}={raw!r} is not a number"
                ) from None
            if not np.isfinite(value):
                raise ValueError(f"{path}, line {row_number}: {target} is {raw}")
            values.append(value)
            if time is not None:
                stamps.append(row[time])
    if not values:
        raise ValueError(f"{path} has a header but no rows")
    if time is not None:
        order = _time_order(stamps)
        if not np.all(np.diff(order) > 0):
            bad = int(np.argmax(np.diff(order) <= 0)) + 3
            raise ValueError(f"{path}, line {bad}: {time} is not after the previous row's")
    return np.array(values, dtype=np.float64)


def read_times(path: Path, time: str) -> np.ndarray | None:
    """The ``time`` column as datetime64 (for plots), or None if it holds plain numbers."""
    with open(path, newline="") as fh:
        stamps = [row[time].strip() for row in csv.DictReader(fh)]
    try:
        [float(s) for s in stamps]
        return None  # numbers are already what the index axis shows best
    except ValueError:
        pass
    try:
        return np.array([np.datetime64(s.replace(" ", "T")) for s in stamps])
    except ValueError:
        return None


def _time_order(stamps: list[str]) -> np.ndarray:
    try:
        return np.array([float(s) for s in stamps])
    except ValueError:
        pass
    try:
        return (
            np.array([np.datetime64(s.strip().replace(" ", "T")) for s in stamps])
            .astype("datetime64[s]")
            .astype(np.int64)
        )
    except ValueError:
        raise ValueError("time column holds neither numbers nor ISO-8601 timestamps") from None


def _parse_periods(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        periods = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ValueError(f"--seasons takes comma-separated integers, got {text!r}") from None
    if any(p < 2 for p in periods):
        raise ValueError(f"--seasons periods must be >= 2, got {text!r}")
    return periods


def backtest(
    file: Path | None = typer.Argument(None, help="CSV file with the series (or use --dataset)."),
    target: str | None = typer.Option(None, "--target", help="Column to forecast."),
    time: str | None = typer.Option(None, "--time", help="Time column (checked to increase)."),
    horizon: int = typer.Option(..., "--horizon", min=1, help="Steps ahead at each origin."),
    season: int | None = typer.Option(None, "--season", min=1, help="Seasonal period."),
    seasons: str | None = typer.Option(
        None, "--seasons", help="MSTL's periods, e.g. 24,168 (default: --season alone)."
    ),
    channels: str | None = typer.Option(
        None,
        "--channels",
        help="Columns learned jointly by ek (peers: one per column); scored on --target.",
    ),
    models: str = typer.Option(DEFAULT_MODELS, "--models", help="Comma-separated models."),
    stride: int = typer.Option(1, "--stride", min=1, help="Steps between forecast origins."),
    start: float = typer.Option(
        0.5, "--start", help="First origin: an index, or a fraction of the series (default: half)."
    ),
    dataset: str | None = typer.Option(
        None, "--dataset", help="A built-in dataset instead of FILE."
    ),
    param: list[str] = typer.Option([], "--param", help="ek parameter KEY=VALUE (repeatable)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write scores as JSON."),
    plot: Path | None = typer.Option(None, "--plot", help="Write a PNG figure."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Backtest ek, ek-nomem and peers on the same stream, strictly causally, and score them.

    Models: ek, ek-nomem, naive, snaive, holtwinters, snarimax, and (with the
    peers extra) autoets, autoarima, autotheta, mstl. Scores: MAE, RMSE, MASE,
    sMAPE, and for models with intervals the WIS and the coverage of the
    50/80/95% intervals; fallbacks count forecasts that fell back to the last
    value because the model could not fit.
    """
    from episodic_koopman import datasets, pin_threads
    from episodic_koopman.evaluation import backtest as run_backtest
    from episodic_koopman.evaluation import model_factories

    pin_threads()
    if (file is None) == (dataset is None):
        _fail("give either a CSV FILE (with --target) or --dataset NAME")
    try:
        stamps, unit = None, None
        periods = _parse_periods(seasons)
        columns: list[str] | None = None
        if dataset is not None:
            series = datasets.load(dataset)
            values, name = series.values, series.name
            season = season or series.season
            stamps, unit = series.timestamps, series.unit or None
            periods = periods or (list(series.seasons) if series.seasons else None)
            columns = list(series.channels) if series.channels else None
            if columns is not None and target is not None and target not in columns:
                raise ValueError(f"--target {target!r} is not a channel of {dataset}: {columns}")
        else:
            assert file is not None
            if target is None:
                _fail("--target is required with a CSV file")
            assert target is not None
            if channels:
                columns = [c.strip() for c in channels.split(",") if c.strip()]
                if target not in columns:
                    columns.append(target)
                values = np.column_stack([read_series_csv(file, c, time) for c in columns])
            else:
                values = read_series_csv(file, target, time)
            name = file.stem
            unit = target
            if time is not None:
                stamps = read_times(file, time)
        names = [m.strip() for m in models.split(",") if m.strip()]
        factories = model_factories(names, season, parse_params(param), periods)
    except (ValueError, FileNotFoundError, ImportError, TypeError) as exc:
        _fail(str(exc))
        return
    first = int(start * len(values)) if 0 < start < 1 else int(start)
    try:
        result = run_backtest(
            values,
            factories,
            horizon,
            start=first,
            stride=stride,
            season=season,
            name=name,
            progress=not quiet,
            channels=columns,
            target=target if columns is not None else None,
        )
    except ValueError as exc:
        _fail(str(exc))
        return
    print_scores(result.to_json(), Console())
    if json_out is not None:
        result.write_json(json_out)
    if plot is not None:
        try:
            from episodic_koopman.plotting import plot_backtest
        except ImportError:
            _fail("--plot needs matplotlib (pip install 'episodic-koopman[plot]')")
        plot_backtest(result, plot, timestamps=stamps, unit=unit)


def print_scores(doc: dict[str, Any], console: Console) -> None:
    where = f"{doc['n_origins']} origins from {doc['start']}"
    on = f", scored on {doc['target']}" if doc.get("target") else ""
    table = Table(title=f"{doc['dataset']}: h={doc['horizon']}, {where}{on}")
    # Model names and coverages never wrap (narrow terminals squeeze the other columns).
    table.add_column("model", no_wrap=True, min_width=max(len(m) for m in doc["models"]))
    for column in ("MAE", "RMSE", "MASE", "sMAPE %", "WIS"):
        table.add_column(column, justify="right")
    table.add_column("cov 50/80/95", justify="right", no_wrap=True, min_width=14)
    for column in ("cov 90", "fallbacks", "seconds"):
        table.add_column(column, justify="right")

    def fmt(value: Any, digits: int = 4) -> str:
        return "-" if value is None else f"{value:.{digits}g}"

    def best_of(key: str) -> float | None:
        found = [row[key] for row in doc["models"].values() if row.get(key) is not None]
        return min(found) if found else None

    def bold_if(value: Any, best: float | None, digits: int = 4) -> str:
        text = fmt(value, digits)
        return f"[bold]{text}[/bold]" if value is not None and value == best else text

    best_mae, best_wis = best_of("mae"), best_of("wis")
    for name, row in doc["models"].items():
        coverages = [row.get(f"coverage_{round(100 * lv)}") for lv in doc["interval_levels"]]
        table.add_row(
            name,
            bold_if(row["mae"], best_mae),
            fmt(row["rmse"]),
            fmt(row["mase"], 3),
            fmt(row["smape"], 3),
            bold_if(row["wis"], best_wis),
            "n/a" if row["wis"] is None else "/".join(f"{c:.2f}" for c in coverages),
            fmt(row["coverage"], 3),
            "-" if row["fallbacks"] is None else str(row["fallbacks"]),
            f"{row['seconds']:.1f}",
        )
    console.print(table)
