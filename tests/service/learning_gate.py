"""A gate in the models' apply path, for tests: it holds the apply worker inside one series.

It is installed where the models live, in this process or in every shard actor
(`service_helpers.hold_learning`), so its signals are files a test can watch and set
from another process: ``inside`` appears when the worker is held, and the worker goes
on once ``release`` exists.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

#: The longest the gate holds the worker if a test never releases it.
HOLD_SECONDS = 60.0


def gated(learn: Any, series_id: str, gate_dir: str) -> Any:
    """``Applier._learn`` with the gate in front of ``series_id``'s batches."""
    inside, release = Path(gate_dir) / "inside", Path(gate_dir) / "release"

    def gated_learn(model: Any, record: Any, values: Any) -> None:
        if record.id == series_id and not release.exists():
            inside.touch()
            deadline = time.monotonic() + HOLD_SECONDS
            while not release.exists() and time.monotonic() < deadline:
                time.sleep(0.01)  # polls the release file, bounded
        learn(model, record, values)

    return gated_learn


def install(series_id: str, gate_dir: str) -> None:
    """Put the gate into this process's `Applier` (a shard actor's: it dies with the app)."""
    from service.applier import Applier

    Applier._learn = staticmethod(gated(Applier._learn, series_id, gate_dir))  # type: ignore[method-assign]
