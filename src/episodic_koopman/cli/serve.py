"""``episodic-koopman serve`` (the HTTP service) and ``replay`` (stream a CSV into it).

Web packages are imported inside the commands, so the rest of the CLI (and the
library) works without the ``service`` extra.
"""

from __future__ import annotations

import csv
import math
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.markup import escape


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(replay)


def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 for all)."),
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port."),
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="SQLite database and snapshots (default: $EPISODIC_KOOPMAN_DATA_DIR, else ./var)."
        ),
    ] = None,
    database: Annotated[
        str | None,
        typer.Option(
            help="A postgresql:// URL to keep series and observations in (default: "
            "$EPISODIC_KOOPMAN_DATABASE, else SQLite in the data dir)."
        ),
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(
            help="local: the models in this process (one core; the default); processes: "
            "in child processes, one per core; ray: in shard actors on Ray, using every "
            "core or many machines (the ray extra; docs/ray.md)."
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="With --engine ray: the Ray cluster to join (e.g. ray-head:6379); default: "
            "start a local Ray on every core. Needs --database postgresql://..."
        ),
    ] = None,
    shards: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,  # service.settings.MAX_SHARD_ACTORS: a database's storage shards
            help="With --engine ray: shard actors, 1 to 64 (default: one per CPU, at most 64).",
        ),
    ] = None,
    processes: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,  # service.settings.MAX_SHARD_ACTORS
            help="With --engine processes: child processes (default: one per CPU; 1 keeps "
            "the models in this process).",
        ),
    ] = None,
    log_level: str = typer.Option("info", help="Uvicorn log level."),
    access_log: bool = typer.Option(False, help="Log every request (costs throughput)."),
) -> None:
    """Run the forecasting service (settings from EPISODIC_KOOPMAN_* variables).

    The models live in this process by default; with --engine processes in child
    processes, one per core; with --engine ray in shard actors on Ray.
    """
    import gc
    import logging

    import uvicorn

    from service.main import create_app
    from service.settings import Settings

    if engine not in (None, "processes", "local", "ray"):
        raise typer.BadParameter("must be processes, local or ray", param_hint="--engine")
    if (ray_address is not None or shards is not None) and engine != "ray":
        raise typer.BadParameter("needs --engine ray", param_hint="--ray-address/--shards")
    if processes is not None and engine not in (None, "processes"):
        raise typer.BadParameter("needs --engine processes", param_hint="--processes")
    given = {
        "data_dir": data_dir,
        "database": database,
        "engine": engine,
        "ray_address": ray_address,
        "shards": shards,
        "processes": processes,
    }
    settings = Settings(**{name: value for name, value in given.items() if value is not None})
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s:     %(message)s")
    app = create_app(settings)
    # What is alive now (modules, the app) lives as long as the process: kept out of the
    # collector's full passes, which restoring many models at start-up triggers (each
    # went over the imports' 150,000 objects: a tenth of a second).
    gc.freeze()
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        timeout_graceful_shutdown=10,
    )


def replay(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="CSV file with a header.")
    ],
    target: str = typer.Option(..., help="Column to forecast."),
    time_column: str | None = typer.Option(
        None,
        "--time",
        help="Time column (ISO dates or numbers); 'DATE+HOURS' adds an hour column to a date "
        "column (e.g. dteday+hr). Default: the row number.",
    ),
    url: str = typer.Option("http://127.0.0.1:8000", help="Server base URL."),
    series: str | None = typer.Option(None, help="Series id (default: the target column name)."),
    speed: float = typer.Option(
        48.0, min=0.0, help="Observations per second (0: as fast as the server takes them)."
    ),
    batch: int = typer.Option(1, min=1, max=100_000, help="Observations per request."),
    horizon: int = typer.Option(24, min=1, help="Forecast steps to print."),
    every: int = typer.Option(24, min=1, help="Print every this many forecast events."),
    limit: int | None = typer.Option(None, min=1, help="Stop after this many rows."),
    retries: int = typer.Option(
        5, min=0, help="Retries of a request when the server cannot be reached (backoff)."
    ),
    api_key: str | None = typer.Option(
        None,
        envvar="EPISODIC_KOOPMAN_API_KEY",
        help="Bearer key, if the server needs one (the first, if the variable lists several).",
    ),
) -> None:
    """Stream a CSV column into a running server and print its live forecasts (SSE).

    Exits 1 with the number of rows the server acknowledged if it goes away.
    """
    from rich.console import Console

    from episodic_koopman.client import Client, ClientError

    console = Console(highlight=False)
    series_id = series or target
    rows = list(_read_rows(file, target, time_column, limit))
    if not rows:
        raise typer.BadParameter(f"{file} has no rows with a numeric {target!r}")
    key = api_key.split(",")[0].strip() if api_key else None
    client = Client(url, api_key=key or None, retries=retries, batch_size=batch)
    # The stream has its own connection pool: closing it ends the stream at once.
    stream_client = Client(url, api_key=key or None, retries=retries)
    listener = _StreamPrinter(stream_client, series_id, horizon, every, console)
    started = time.perf_counter()
    acknowledged = accepted = duplicates = 0
    try:
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            result = client.push(series_id, chunk)
            acknowledged += result.sent
            accepted += result.accepted
            duplicates += result.duplicates
            listener.start()  # once the series exists; no-op afterwards
            if speed > 0:
                delay = started + acknowledged / speed - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
        final = client.forecast(series_id, horizon)
        listener.wait_for(final.n_observations, timeout=30.0)
        listener.stop()
        _print_lines(console, ["─" * 32 + " final forecast " + "─" * 32])
        _print_lines(console, format_forecast(final, horizon))
    except ClientError as exc:
        listener.stop()
        acknowledged += exc.acknowledged
        Console(stderr=True).print(
            f"[red]error:[/red] {escape(str(exc))}\n"
            f"{acknowledged} of {len(rows)} rows were acknowledged (stored) by the server; "
            "replaying the file again skips them as duplicates",
            soft_wrap=True,
            highlight=False,
        )
        raise typer.Exit(1) from None
    finally:
        listener.stop()
        client.close()
    elapsed = time.perf_counter() - started
    _print_lines(
        console,
        [
            f"sent {acknowledged} rows in {elapsed:.1f} s ({acknowledged / elapsed:.0f}/s): "
            f"{accepted} accepted, {duplicates} duplicates"
        ],
    )


class _StreamPrinter:
    """Prints every ``every``-th forecast of the series' SSE stream from a daemon thread."""

    def __init__(self, client: Any, series_id: str, horizon: int, every: int, console: Any):
        self.client, self.series_id, self.horizon, self.every = client, series_id, horizon, every
        self.console = console
        self.stopped = threading.Event()
        self.seen = threading.Condition()
        self.newest = -1  # n_observations of the newest forecast received
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        if not self.thread.is_alive() and not self.stopped.is_set() and self.newest < 0:
            self.newest = 0
            self.thread.start()

    def stop(self) -> None:
        if not self.stopped.is_set():
            self.stopped.set()
            self.client.close()

    def wait_for(self, n: int, timeout: float) -> None:
        """Until the stream has delivered the forecast after ``n`` observations (bounded)."""
        with self.seen:
            self.seen.wait_for(lambda: self.newest >= n or not self.thread.is_alive(), timeout)

    def _run(self) -> None:
        try:
            for k, forecast in enumerate(self.client.stream(self.series_id, self.horizon)):
                if self.stopped.is_set():
                    return
                if k % self.every == 0:
                    _print_lines(self.console, format_forecast(forecast, self.horizon))
                with self.seen:
                    self.newest = forecast.n_observations
                    self.seen.notify_all()
        except Exception as exc:  # stop() closes the connection under the reading thread
            if not self.stopped.is_set():
                self.console.print(f"stream ended: {exc}", style="yellow", soft_wrap=True)
        finally:
            with self.seen:
                self.seen.notify_all()


def _print_lines(console: Any, lines: list[str]) -> None:
    # soft_wrap: the lines are already short; rich must not break them (mid-number).
    for line in lines:
        console.print(line, soft_wrap=True, markup=False, highlight=False)


def _number(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.1f}"


def format_forecast(f: Any, horizon: int, width: int = 80) -> list[str]:
    """A served forecast as lines of at most ``width`` columns, never broken inside a value.

    The first line has the origin and as many of the first steps (up to six) as fit; the
    details follow, indented, split between parts rather than inside them.
    """
    mean = np.asarray(f.mean)
    first = mean if mean.ndim == 1 else mean[:, 0]
    when = f"after t={f.last_t}" if f.last_t is not None else "before any data"
    head = f"{when} (n={f.n_observations}): next"
    shown = 0
    for value in first[: min(horizon, 6)]:
        piece = f" {_number(float(value))}"
        if len(head) + len(piece) > width and shown:
            break
        head += piece
        shown += 1
    parts = []
    if f.timestamps:
        parts.append(f"from {f.timestamps[0]}")
    if f.spectrum is not None:
        rows = f.spectrum.summary()
        if rows and rows[0]["period"]:
            parts.append(f"period {rows[0]['period']:.1f}")
    if f.recall_applied and f.recalled:
        best, spans = f.recalled[0], getattr(f, "recalled_spans", None)
        when = f" from {spans[0][1]}" if spans and spans[0][1] is not None else ""
        parts.append(f"recalls episode {best.id}{when} (weight {best.weight:.2f})")
    elif f.fallback:
        parts.append("warming up")
    lines, line = [head], ""
    for part in parts:
        candidate = f"{line}, {part}" if line else f"  {part}"
        if len(candidate) > width and line:
            lines.append(line)
            candidate = f"  {part}"
        line = candidate
    if line:
        lines.append(line)
    return lines


def _read_rows(
    file: Path, target: str, time_column: str | None, limit: int | None
) -> Iterator[tuple[Any, float]]:
    with file.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        wanted = [target] + (time_column.split("+") if time_column else [])
        missing = [c for c in wanted if c not in columns]
        if missing:
            raise typer.BadParameter(f"{file} has no column(s) {missing}; it has {columns}")
        for i, row in enumerate(reader):
            if limit is not None and i >= limit:
                return
            try:
                y = float(row[target])
            except ValueError:
                continue
            yield _time_of(row, time_column, i), y


def _time_of(row: dict[str, str], time_column: str | None, index: int) -> Any:
    if time_column is None:
        return index
    date_column, *hour_columns = time_column.split("+")
    raw = row[date_column].strip()
    if not hour_columns:
        try:
            return float(raw)
        except ValueError:
            return raw  # an ISO-8601 string; the server validates it
    moment = datetime.fromisoformat(raw)
    for column in hour_columns:
        moment += timedelta(hours=float(row[column]))
    return moment.isoformat()
