"""When a series' model is worth a new snapshot.

A snapshot rewrites the whole model (megabytes), while an observation adds a few
bytes to SQLite, so snapshotting every changed model periodically costs
kilobytes of disk writes per observation. The policy instead spends at most
``bytes_per_observation`` of snapshot writes per applied observation: a series
is snapshotted once ``new observations x bytes_per_observation`` reaches the
size of its last snapshot (a model never snapshotted has size 0, so it gets its
first snapshot at the next check).

The price is replay after a crash: a series may be up to ``size /
bytes_per_observation`` observations ahead of its snapshot, and those are replayed
from SQLite at the next start. Two bounds cap that: ``max_observations`` (a
snapshot is due at once when that many are new, whatever it costs) and
``max_age_seconds`` (a series with any new observation is snapshotted once its
last snapshot is that old). A clean shutdown snapshots every changed model (within
its time budget), so ordinary restarts replay nothing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SnapshotPolicy:
    bytes_per_observation: float
    max_observations: int
    max_age_seconds: float

    def due(self, new_observations: int, last_size: int, age_seconds: float) -> bool:
        """Whether a series this far ahead of its last snapshot should be snapshotted now."""
        if new_observations <= 0:
            return False
        return (
            new_observations * self.bytes_per_observation >= last_size
            or new_observations >= self.max_observations
            or age_seconds >= self.max_age_seconds
        )

    def overdue(self, new_observations: int) -> bool:
        """The hard bound, checked on the apply path after every slice."""
        return new_observations >= self.max_observations
