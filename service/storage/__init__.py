"""Storage backends behind one interface (`base.Storage`): embedded SQLite or PostgreSQL.

`open_storage` picks the backend from the settings: ``EPISODIC_KOOPMAN_DATABASE``
empty means SQLite in the data dir, a ``postgresql://`` URL means PostgreSQL.
"""

from __future__ import annotations

import os
import socket
import uuid

from ..settings import Settings
from .base import DEFAULT_SHARDS, Reader, StaleOwner, Storage, WriteSession
from .committer import Committer
from .sqlite import SqliteStorage

__all__ = [
    "DEFAULT_SHARDS",
    "Committer",
    "Reader",
    "SqliteStorage",
    "StaleOwner",
    "Storage",
    "WriteSession",
    "open_storage",
    "owner_name",
    "storage_for_url",
]

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def storage_for_url(url: str, settings: Settings) -> Storage:
    """The backend a database URL names (empty: SQLite in the data dir)."""
    if not url:
        return SqliteStorage(settings.db_path)
    if url.startswith(_POSTGRES_SCHEMES):
        try:
            from .postgres import PostgresStorage
        except ImportError as exc:
            raise RuntimeError(
                "a PostgreSQL database needs psycopg: pip install 'episodic-koopman[postgres]'"
            ) from exc
        return PostgresStorage(url)
    scheme = url.split(":", 1)[0]
    raise ValueError(
        f"EPISODIC_KOOPMAN_DATABASE must be empty (SQLite) or a postgresql:// URL, not {scheme}:"
    )


def open_storage(settings: Settings) -> Storage:
    return storage_for_url(settings.database, settings)


def owner_name() -> str:
    """A name for this process in the ``shard_owner`` table (host, pid, and a random tag)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
