"""Model snapshots in the PostgreSQL database, so that a server on any node restores from them.

One row per series incarnation in the ``snapshots`` table (`service.storage.postgres`):
its newest snapshot's ``seq``, size and bytes. A write is one row upsert that replaces
an older snapshot of the incarnation in the same statement (never a newer one), so the
table never holds more than one snapshot per incarnation and a write touches nothing
else. It runs in a transaction that first share-locks the series' ``shard_owner`` row
and checks its epoch, as observation writes do (`service.storage.base`): an owner that
was fenced off gets `StaleOwner` and stores nothing. The upsert only inserts for a series
row with that ``sid`` and incarnation, so a snapshot that lost a race with a delete or a
reconfiguration is not stored. Deleting or reconfiguring a series deletes its snapshot
in the committer's transaction (`PostgresSession`), after changing the series row: the
upsert share-locks that row, so either the change waits for the snapshot's commit and
then deletes it, or the upsert waits for the change and finds no row to snapshot.

Rows carry their series' shard, so a server (or a Ray shard actor) indexes, and discards
as unknown, only the snapshots of the shards it owns. The index (incarnation -> seq,
size) is read once at start, after the shards were acquired: from then on only this
server writes them.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import psycopg

from episodic_koopman import EpisodicKoopman
from episodic_koopman.persistence import model_from_bytes

from ..snapshots import SnapshotStore
from .base import StaleOwner
from .postgres import per_thread
from .records import shard_of

log = logging.getLogger("episodic_koopman.service")

#: Insert, or replace an older snapshot of the incarnation (RETURNING nothing: not stored).
#: The series row is share-locked until the commit (see the module docstring).
_UPSERT = """
INSERT INTO snapshots (incarnation, sid, shard, seq, size, model)
SELECT %(incarnation)s, sid, %(shard)s, %(seq)s, %(size)s, %(model)b FROM series
WHERE sid = %(sid)s AND incarnation = %(incarnation)s FOR SHARE
ON CONFLICT (incarnation) DO UPDATE
SET seq = excluded.seq, size = excluded.size, model = excluded.model
WHERE snapshots.seq < excluded.seq
RETURNING seq
"""


class PostgresSnapshotStore(SnapshotStore):
    """The snapshots of the shards in ``epochs`` (held by this server) in ``url``'s database."""

    def __init__(self, url: str, epochs: dict[int, int], n_shards: int) -> None:
        self.epochs = dict(epochs)
        self.n_shards = n_shards
        self._conns = per_thread(url)
        self._lock = threading.Lock()
        self._index: dict[str, tuple[int, int, int]] = {}  # incarnation -> (seq, size, shard)
        rows = self._conns.get().execute(
            "SELECT incarnation, seq, size, shard FROM snapshots WHERE shard = ANY(%s)",
            (sorted(self.epochs),),
        )
        for incarnation, seq, size, shard in rows.fetchall():
            self._index[incarnation] = (seq, size, shard)

    def incarnations(self) -> set[str]:
        with self._lock:
            return set(self._index)

    def candidates(self, incarnation: str, at_most: int) -> list[int]:
        with self._lock:
            entry = self._index.get(incarnation)
        return [entry[0]] if entry is not None and entry[0] <= at_most else []

    def load(self, incarnation: str, seq: int) -> EpisodicKoopman:
        # Binary results: the bytes arrive as they are stored, with no hex decoding.
        row = (
            self._conns.get()
            .execute(
                "SELECT model FROM snapshots WHERE incarnation = %s AND seq = %s",
                (incarnation, seq),
                binary=True,
            )
            .fetchone()
        )
        if row is None:
            raise FileNotFoundError(f"no snapshot {seq} of {incarnation} in the database")
        return model_from_bytes(bytes(row[0]))

    def size(self, incarnation: str, seq: int) -> int:
        with self._lock:
            entry = self._index.get(incarnation)
        return entry[1] if entry is not None and entry[0] == seq else 0

    def save_bytes(self, series_id: str, sid: int, incarnation: str, seq: int, data: bytes) -> bool:
        shard = shard_of(series_id, self.n_shards)
        conn = self._conns.get()
        with conn.transaction():
            self._check_epoch(conn, shard)
            row = conn.execute(
                _UPSERT,
                {
                    "incarnation": incarnation,
                    "shard": shard,
                    "seq": seq,
                    "size": len(data),
                    "model": data,
                    "sid": sid,
                },
            ).fetchone()
        if row is None:
            return False
        with self._lock:
            current = self._index.get(incarnation)
            if current is None or current[0] < seq:
                self._index[incarnation] = (seq, len(data), shard)
        return True

    def discard(self, incarnation: str) -> None:
        self._delete(incarnation, None)

    def discard_invalid(self, incarnation: str, seq: int) -> None:
        self._delete(incarnation, seq)

    def stored(self) -> dict[str, list[int]]:
        rows = self._conns.get().execute(
            "SELECT incarnation, seq FROM snapshots WHERE shard = ANY(%s)", (sorted(self.epochs),)
        )
        return {incarnation: [seq] for incarnation, seq in rows.fetchall()}

    def close(self) -> None:
        self._conns.close()

    def _delete(self, incarnation: str, seq: int | None) -> None:
        """Delete an incarnation's snapshot (only if it is ``seq``, when given), fenced."""
        with self._lock:
            entry = self._index.get(incarnation)
            if entry is None or (seq is not None and entry[0] != seq):
                return  # not ours, or already replaced: nothing to delete
            del self._index[incarnation]
        conn = self._conns.get()
        try:
            with conn.transaction():
                self._check_epoch(conn, entry[2])
                conn.execute(
                    "DELETE FROM snapshots WHERE incarnation = %s AND seq = %s",
                    (incarnation, entry[0]),
                )
        except StaleOwner as exc:
            # The shard's new owner discards what it does not know at its start.
            log.warning("snapshot of %s left in place: %s", incarnation, exc.detail)

    def _check_epoch(self, conn: psycopg.Connection[Any], shard: int) -> None:
        """Share-lock the shard's owner row until the transaction ends; raise if it moved on."""
        row = conn.execute(
            "SELECT epoch FROM shard_owner WHERE shard = %s FOR SHARE", (shard,)
        ).fetchone()
        current = None if row is None else row[0]
        held = self.epochs.get(shard)
        if held is None or current != held:
            raise StaleOwner(shard, held, current)
