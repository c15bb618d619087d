"""``episodic-koopman data``: get the real data files and list the built-in datasets."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

data_app = typer.Typer(help="Get and list datasets.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")


@data_app.command()
def fetch(
    target: Path = typer.Option(Path("data"), "--to", help="Folder to write the files into."),
    source: Path | None = typer.Option(
        None, "--from", help="Copy the files from this folder instead of downloading them."
    ),
) -> None:
    """Download ILINet, the UCI bike-share data and ETDataset's ETTh1/ETTh2 (or copy them)."""
    from episodic_koopman import datasets

    console = Console()
    try:
        written = datasets.fetch(target, source_dir=source)
    except FileNotFoundError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=2) from None
    except OSError as exc:
        Console(stderr=True).print(
            f"[red]error:[/red] download failed ({exc}); with no internet access, copy the files "
            "from a folder that has them: episodic-koopman data fetch --from DIR"
        )
        raise typer.Exit(code=1) from None
    for path in written:
        console.print(f"wrote {path}")


@data_app.command("list")
def list_datasets() -> None:
    """List the built-in datasets and where the real files were found."""
    from episodic_koopman import datasets

    console = Console()
    for name in sorted(datasets.SYNTHETIC):
        console.print(f"{name:24s} synthetic")
    files = datasets.REAL_FILES
    for name in sorted(datasets.REAL):
        if name in files:
            path = datasets.find_data_file(files[name])
            where = str(path) if path else "not found: run `episodic-koopman data fetch`"
        else:
            where = "bundled with river"
        console.print(f"{name:24s} {where}")
