"""``episodic-koopman serve`` (the HTTP service) and ``replay`` (stream a CSV into it).

Web packages are imported inside the commands, so the rest of the CLI (and the
library) works without the ``service`` extra.
"""

from __future__ import annotations

import csv
import json
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer


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
    log_level: str = typer.Option("info", help="Uvicorn log level."),
    access_log: bool = typer.Option(False, help="Log every request (costs throughput)."),
) -> None:
    """Run the forecasting service (one process; settings from EPISODIC_KOOPMAN_* variables)."""
    import logging

    import uvicorn

    from service.main import create_app
    from service.settings import Settings

    given = {"data_dir": data_dir, "database": database}
    settings = Settings(**{name: value for name, value in given.items() if value is not None})
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s:     %(message)s")
    uvicorn.run(
        create_app(settings),
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
    api_key: str | None = typer.Option(
        None, envvar="EPISODIC_KOOPMAN_API_KEY", help="Bearer key, if the server needs one."
    ),
) -> None:
    """Stream a CSV column into a running server and print its live forecasts (SSE)."""
    import httpx
    from rich.console import Console

    console = Console()
    series_id = series or target
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    rows = list(_read_rows(file, target, time_column, limit))
    if not rows:
        raise typer.BadParameter(f"{file} has no rows with a numeric {target!r}")
    client = httpx.Client(base_url=url, headers=headers, timeout=60.0)
    stop = threading.Event()
    progress = {"n": -1}  # newest n_observations the stream has shown
    listener = threading.Thread(
        target=_print_stream,
        args=(url, series_id, headers, horizon, every, console, stop, progress),
        daemon=True,
    )
    started = time.perf_counter()
    sent = accepted = duplicates = 0
    try:
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            response = client.post(
                f"/v1/series/{series_id}/observations",
                json={"observations": [{"t": t, "y": y} for t, y in chunk]},
            )
            if response.status_code != 200:
                console.print(f"[red]{response.status_code}[/red] {response.text}")
                raise typer.Exit(1)
            body = response.json()
            accepted += body["accepted"]
            duplicates += body["duplicates"]
            sent += len(chunk)
            if not listener.is_alive() and start == 0:
                listener.start()  # the series exists now
            if speed > 0:
                delay = started + sent / speed - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
        final = client.get(f"/v1/series/{series_id}/forecast", params={"horizon": horizon})
        final.raise_for_status()
        deadline = time.monotonic() + 30.0  # let the stream show the last batch's event
        while progress["n"] < final.json()["n_observations"] and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        console.rule("final forecast")
        _print_forecast(console, final.json(), horizon)
    finally:
        stop.set()
        client.close()
    elapsed = time.perf_counter() - started
    console.print(
        f"sent {sent} rows in {elapsed:.1f} s ({sent / elapsed:.0f}/s): "
        f"{accepted} accepted, {duplicates} duplicates"
    )


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


def _print_stream(
    url: str,
    series_id: str,
    headers: dict[str, str],
    horizon: int,
    every: int,
    console: Any,
    stop: threading.Event,
    progress: dict[str, int],
) -> None:
    """Print every ``every``-th forecast event of the series' SSE stream."""
    import httpx

    seen = 0
    try:
        with httpx.stream(
            "GET",
            f"{url}/v1/series/{series_id}/forecast/stream",
            params={"horizon": horizon},
            headers=headers,
            timeout=httpx.Timeout(60.0, read=None),
        ) as response:
            event = None
            for line in response.iter_lines():
                if stop.is_set():
                    return
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event == "forecast":
                    forecast = json.loads(line[5:])
                    if seen % every == 0:
                        _print_forecast(console, forecast, horizon)
                    seen += 1
                    progress["n"] = forecast["n_observations"]
    except httpx.HTTPError as exc:
        if not stop.is_set():
            console.print(f"[yellow]stream ended: {exc}[/yellow]", file=sys.stderr)


def _print_forecast(console: Any, f: dict[str, Any], horizon: int) -> None:
    mean = f["mean"] if isinstance(f["mean"], list) else next(iter(f["mean"].values()))
    shown = min(horizon, 6)
    steps = ", ".join(f"{v:.1f}" if v is not None else "-" for v in mean[:shown])
    when = f"after t={f['last_t']}" if f["last_t"] is not None else "before any data"
    parts = [f"[bold]{when}[/bold] (n={f['n_observations']}): next {shown}: {steps}"]
    if f["timestamps"]:
        parts.append(f"from {f['timestamps'][0]}")
    if f["spectrum"] and f["spectrum"][0]["period"]:
        parts.append(f"period {f['spectrum'][0]['period']:.1f}")
    if f["recall_applied"] and f["recalled"]:
        best = f["recalled"][0]
        parts.append(f"recalls episode {best['id']} ({best['span'][1]}, w={best['weight']:.2f})")
    elif f["fallback"]:
        parts.append("warming up")
    console.print("  ".join(parts))
