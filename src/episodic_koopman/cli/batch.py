"""``episodic-koopman forecast`` (many series from a file) and ``inspect`` (a saved model).

User errors end with a one-line message and a non-zero exit, never a traceback:
exit 2 when the input or the options cannot be used at all, exit 1 when a series
failed (the others are still forecast and written, and the summary lists the
failures). ``--allow-failures`` makes a run that forecast at least one series exit 0.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .params import parse_params

#: Failures listed one by one in the summary; past this they are counted.
MAX_LISTED_FAILURES = 20


def register(app: typer.Typer) -> None:
    app.command()(forecast)
    app.command()(inspect)


def _fail(console: Console, message: str, code: int = 2) -> typer.Exit:
    # Escaped: messages quote user input and pip extras ('episodic-koopman[plot]').
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def forecast(
    file: Annotated[Path, typer.Argument(help="CSV or Parquet file in long format.")],
    horizon: int = typer.Option(..., "--horizon", help="Steps ahead to forecast."),
    id_col: str | None = typer.Option(
        None, "--id", help="Series id column [default: unique_id; none: one series]."
    ),
    time_col: str = typer.Option("ds", "--time", help="Timestamp column."),
    target_col: str = typer.Option("y", "--target", help="Target column."),
    level: float = typer.Option(0.9, help="Level of the prediction intervals."),
    output: str = typer.Option(
        "-", "--output", "-o", help="Output file (.csv or .parquet); '-' for stdout."
    ),
    missing: str = typer.Option(
        "error",
        help="Gaps and empty targets: error (fail the series), ffill, interpolate, zero, drop "
        "(the library's names; raise and skip are accepted for error and drop).",
    ),
    memory_scope: str = typer.Option(
        "series", help="series: one memory per series; shared: one memory for all series."
    ),
    partitions: int | None = typer.Option(
        None, min=1, help="Shared scope: partitions of series [default: one per worker]."
    ),
    memory_from: Annotated[
        Path | None,
        typer.Option(help="Shared scope: start from this merged memory (from --save-memory)."),
    ] = None,
    save_memory: Annotated[
        Path | None, typer.Option(help="Shared scope: write the merged memory here.")
    ] = None,
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Worker processes."),
    engine: str = typer.Option("local", help="local (process pool) or dask."),
    scheduler: str | None = typer.Option(
        None, help="Dask scheduler address tcp://HOST:PORT [default: a LocalCluster]."
    ),
    timeout: float = typer.Option(
        10.0, min=0.1, help="Seconds to wait for the Dask scheduler at --scheduler."
    ),
    save_models: Annotated[
        Path | None, typer.Option(help="Write each fitted model into this folder.")
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param", "-p", help="Model parameter KEY=VALUE (repeatable), e.g. delays=16."
        ),
    ] = None,
    progress: bool = typer.Option(True, help="Show a progress bar."),
    allow_failures: bool = typer.Option(
        False,
        "--allow-failures",
        help="Exit 0 when some series failed but at least one was forecast [default: exit 1].",
    ),
) -> None:
    """Forecast every series of a long-format file (unique_id, ds, y).

    Exit codes: 0 when every series was forecast; 1 when a series failed (the others
    are still written; 0 with --allow-failures if at least one was forecast); 2 when
    the file or the options cannot be used.
    """
    from episodic_koopman import batch

    err = Console(stderr=True)
    try:
        params = parse_params(param or [])
    except ValueError as exc:
        raise _fail(err, str(exc)) from None
    if engine not in ("local", "dask"):
        raise _fail(err, f"--engine must be local or dask, got {engine!r}")
    if scheduler is not None and engine != "dask":
        raise _fail(err, "--scheduler needs --engine dask")
    if memory_scope != "shared" and (memory_from or save_memory or partitions):
        raise _fail(err, "--partitions, --memory-from and --save-memory need --memory-scope shared")
    cfg = batch.BatchConfig(
        horizon=horizon,
        level=level,
        missing=missing,
        scope=memory_scope,
        params=params,
        save_dir=str(save_models) if save_models is not None else None,
        partitions=partitions,
    )
    try:
        cfg.validate()
        panel = batch.read_long(file, id_col, time_col, target_col)
    except batch.BatchInputError as exc:
        raise _fail(err, str(exc)) from None
    if output != "-" and not Path(output).parent.exists():
        raise _fail(err, f"cannot write {output}: folder {Path(output).parent} does not exist")

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("forecasting"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("series"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err,
        transient=False,
        disable=not progress,
    )
    try:
        with bar:
            task = bar.add_task("series", total=len(panel))
            result = batch.forecast_panel(
                panel,
                cfg,
                engine=engine,
                jobs=jobs,
                scheduler=scheduler,
                initial_memory=memory_from,
                connect_timeout=timeout,
                on_progress=lambda n, _results: bar.advance(task, n),
            )
    except batch.BatchInputError as exc:
        raise _fail(err, str(exc)) from None
    except KeyboardInterrupt:
        raise _fail(err, "interrupted", 130) from None
    if result.done:
        try:
            batch.write_forecasts(result.frame(), output)
        except OSError as exc:
            raise _fail(err, f"cannot write {output}: {exc}") from None
    if save_memory is not None and result.memory is not None:
        batch.save_memory(result.memory, save_memory, result.sources)
    _summary(err, result, output, save_models, save_memory)
    if not result.done:
        raise typer.Exit(1)
    if result.failed and not allow_failures:
        err.print(
            "[bold red]error:[/] some series failed; their forecasts are missing "
            "(--allow-failures exits 0 in that case)",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)


def _summary(
    console: Console, result: Any, output: str, save_models: Path | None, memory: Path | None
) -> None:
    failures = list(result.input_problems) + [(str(r.uid), r.reason) for r in result.failed]
    table = Table(title="forecast summary", show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("series forecast", str(len(result.done)))
    table.add_row("series failed", str(len(result.failed)))
    if result.input_problems:
        table.add_row("unusable rows", "; ".join(reason for _, reason in result.input_problems))
    table.add_row("seconds", f"{result.seconds:.2f}")
    table.add_row("throughput", f"{result.throughput:.1f} series/s")
    where = f"{result.engine}, {result.workers} worker{'s' * (result.workers > 1)}"
    table.add_row("engine", where)
    scope = result.scope
    if result.partitions is not None:
        scope += f", {result.partitions} partition{'s' * (result.partitions > 1)}"
    if result.memory is not None:
        scope += f", merged memory of {len(result.memory)} episodes"
    table.add_row("memory scope", scope)
    if result.done:
        table.add_row("output", "stdout" if output == "-" else output)
    if save_models is not None:
        table.add_row("models", str(save_models))
    if memory is not None and result.memory is not None:
        table.add_row("shared memory", str(memory))
    console.print(table)
    for _uid, reason in failures[:MAX_LISTED_FAILURES]:
        console.print(f"  [yellow]failed[/] {escape(reason)}", highlight=False, soft_wrap=True)
    if len(failures) > MAX_LISTED_FAILURES:
        console.print(f"  ... and {len(failures) - MAX_LISTED_FAILURES} more failures")
    if not result.done:
        console.print("[bold red]error:[/] no series could be forecast")


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}g}"


def inspect(
    model_path: Annotated[
        Path, typer.Argument(metavar="MODEL", help="A model saved by the library.")
    ],
    plot: Annotated[
        Path | None,
        typer.Option(help="Draw the eigenvalues and the memory's episodes into this PNG."),
    ] = None,
    modes: int = typer.Option(10, min=1, help="Modes listed."),
) -> None:
    """Print a saved model's spectrum and memory statistics (optionally plot them)."""
    from episodic_koopman import EpisodicKoopman

    out, err = Console(), Console(stderr=True)
    if not model_path.is_file():
        raise _fail(err, f"{model_path}: no such file")
    try:
        model = EpisodicKoopman.load(model_path)
    except (ValueError, KeyError, OSError) as exc:
        raise _fail(err, f"cannot load {model_path}: {exc}") from None
    info = Table(title=f"model {model_path.name}", show_header=False, title_justify="left")
    info.add_column("what")
    info.add_column("value", justify="right")
    params = model.to_flat()
    for name in ("delays", "window", "rank", "max_rank", "strategy", "episode_horizon", "stride"):
        info.add_row(name, str(params[name]))
    info.add_row("observations", str(model.n_observations))
    info.add_row("fitted", "yes" if model.is_fitted else "no")
    info.add_row("episodes in memory", str(model.memory_size))
    info.add_row("interval coverage", _fmt(model.coverage, 3))
    out.print(info)

    spectrum = model.spectrum()
    rows = spectrum.summary()[:modes] if spectrum is not None else []
    table = Table(title="spectrum (strongest modes first)", title_justify="left")
    for name in ("mode", "period", "frequency", "|λ|", "growth rate", "amplitude"):
        table.add_column(name, justify="right")
    for i, row in enumerate(rows):
        table.add_row(
            str(i + 1),
            _fmt(row["period"]),
            _fmt(row["frequency"]),
            _fmt(row["magnitude"]),
            _fmt(row["growth_rate"]),
            _fmt(row["amplitude"]),
        )
    out.print(table if rows else "spectrum: none (the model has not been fitted)")

    episodes = _all_episodes(model)
    if episodes:
        sources = {e["source"] for e in episodes}
        maes = [e["mae"] for e in episodes if e["mae"] is not None]  # kept for residual only
        stats = Table(title="memory", show_header=False, title_justify="left")
        stats.add_column("what")
        stats.add_column("value", justify="right")
        stats.add_row("episodes", str(len(episodes)))
        stats.add_row("series (sources)", str(len(sources)))
        stats.add_row("origins", f"{episodes[0]['origin']} .. {episodes[-1]['origin']}")
        if maes:
            stats.add_row("episode forecast MAE (median)", _fmt(sorted(maes)[len(maes) // 2]))
        stats.add_row("mean rank", _fmt(sum(e["rank"] for e in episodes) / len(episodes), 3))
        out.print(stats)
    else:
        out.print("memory: empty")
    if plot is not None:
        try:
            draw(model, episodes, plot)
        except ImportError:
            raise _fail(
                err, "--plot needs matplotlib: pip install 'episodic-koopman[plot]'"
            ) from None
        except OSError as exc:
            raise _fail(err, f"cannot write {plot}: {exc}") from None
        out.print(f"plot written to {plot}")


def _all_episodes(model: Any) -> list[dict[str, Any]]:
    episodes: list[dict[str, Any]] = []
    while len(episodes) < model.memory_size:
        page = model.episodes(offset=len(episodes), limit=10_000)
        if not page:
            break
        episodes += page
    return episodes


def draw(model: Any, episodes: list[dict[str, Any]], path: Path) -> None:
    """Eigenvalues on the unit circle, and each episode's dominant period and error over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5))
    theta = np.linspace(0, 2 * np.pi, 400)
    left.plot(np.cos(theta), np.sin(theta), color="0.6", lw=1)
    spectrum = model.spectrum()
    if spectrum is not None:
        eig = spectrum.eigenvalues
        amp = np.abs(spectrum.amplitudes)
        size = 20 + 200 * amp / amp.max() if amp.size and amp.max() > 0 else 40
        points = left.scatter(
            eig.real, eig.imag, s=size, c=np.abs(eig), cmap="coolwarm", vmin=0.9, vmax=1.1
        )
        fig.colorbar(points, ax=left, label="|λ|")
    left.set_aspect("equal")
    left.axhline(0, color="0.85", lw=0.8)
    left.axvline(0, color="0.85", lw=0.8)
    left.set(title="eigenvalues (size: amplitude)", xlabel="Re λ", ylabel="Im λ")
    if episodes:
        origin = np.array([e["origin"] for e in episodes])
        period = np.array(
            [1.0 / max((f for f in e["frequencies"] if f > 0), default=np.nan) for e in episodes]
        )
        error = np.array([np.nan if e["mae"] is None else e["mae"] for e in episodes])
        sources = sorted({e["source"] for e in episodes})
        if 1 < len(sources) <= 10:  # a shared memory: one colour per series
            source = np.array([e["source"] for e in episodes])
            for k, s in enumerate(sources):
                mine = source == s
                right.scatter(
                    origin[mine], period[mine], s=12, color=f"C{k}", label=f"source {k + 1}"
                )
            right.legend(title="stored by series", fontsize="small", markerscale=1.5)
        elif len(sources) > 10:
            colour = np.array([sources.index(e["source"]) for e in episodes])
            points = right.scatter(origin, period, c=colour, s=12, cmap="turbo")
            fig.colorbar(points, ax=right, label=f"series (of {len(sources)})")
        elif np.isfinite(error).any():
            points = right.scatter(origin, period, c=error, s=12, cmap="viridis")
            fig.colorbar(points, ax=right, label="episode forecast MAE")
        else:  # episode forecasts are kept only for the residual expert
            right.scatter(origin, period, s=12, color="C0")
        right.set(
            title=f"memory: {len(episodes)} episodes",
            xlabel="episode origin (observation)",
            ylabel="dominant period (steps)",
        )
    else:
        right.text(0.5, 0.5, "memory is empty", ha="center", va="center")
        right.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
