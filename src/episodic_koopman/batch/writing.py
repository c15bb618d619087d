"""Where a batch run's outputs go: the forecasts file, and the index of saved models."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # run imports this module: only the type, not a cycle at run time
    from .tasks import SeriesResult


def write_model_index(folder: Path, results: Sequence[SeriesResult]) -> None:
    """``models.csv`` in ``folder``: which file holds which series' model."""
    import csv

    with open(folder / "models.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["unique_id", "file"])
        for r in results:
            if r.model_path is not None:
                writer.writerow([r.uid, Path(r.model_path).name])


def write_forecasts(frame: Any, output: str | Path | None) -> None:
    """Write to ``output`` (``.parquet``/``.pq`` as Parquet, otherwise CSV); ``"-"``: stdout."""
    import sys

    if output is None or str(output) == "-":
        frame.to_csv(sys.stdout, index=False)
        return
    path = Path(output)
    if path.name.lower().endswith((".parquet", ".pq")):
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
