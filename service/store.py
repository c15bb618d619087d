"""The storage names the rest of the service imports (the implementations are in `service.storage`).

Records, commands, outcomes and effects are backend-neutral; `Committer` is the single
writer and `Reader` the read interface, whatever the backend (SQLite or PostgreSQL).
"""

from __future__ import annotations

from .storage.base import Reader, StaleOwner, Storage
from .storage.committer import MAX_GROUP, Committer
from .storage.model_params import canonical_params, check_layout, full_params
from .storage.records import (
    Chunk,
    Configure,
    ConfigureOutcome,
    Delete,
    Effect,
    Ingest,
    IngestOutcome,
    Publisher,
    SeriesRecord,
)

__all__ = [
    "MAX_GROUP",
    "Chunk",
    "Committer",
    "Configure",
    "ConfigureOutcome",
    "Delete",
    "Effect",
    "Ingest",
    "IngestOutcome",
    "Publisher",
    "Reader",
    "SeriesRecord",
    "StaleOwner",
    "Storage",
    "canonical_params",
    "check_layout",
    "full_params",
]
