"""The server backend: PostgreSQL through psycopg 3 (``EPISODIC_KOOPMAN_DATABASE=postgresql://...``).

The schema (`service.storage.postgres_schema`) mirrors SQLite's: observations in
chunks, one row per push, time keys in pairs of typed columns, and a trigger that refuses
a chunk that does not extend its series.
Keys and values are little-endian arrays (``bytea``), parameters and channels JSON
text, so both backends round-trip them bit for bit.

A commit returns once PostgreSQL has flushed its WAL (``synchronous_commit`` as the
server sets it; the default, ``on``, is what makes an acknowledgement durable).
Fencing locks the shard rows a transaction touches ``FOR SHARE`` until it ends, so an
acquisition (``FOR UPDATE``, then an epoch bump) waits for in-flight writers and every
later transaction of the old owner sees the new epoch. Rows are locked in shard order
on both sides, so the two cannot deadlock.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg.conninfo import conninfo_to_dict

from ..snapshots import SnapshotStore
from ..timestamps import TimeKey
from .base import DEFAULT_SHARDS, Reader, Storage, WriteSession
from .chunks import StoredChunk, encode_keys, encode_values
from .connections import ConnectionPerThread
from .postgres_schema import INSERT_CHUNK, create_or_migrate, join_key, split_key
from .records import SeriesRecord, record_from_columns

log = logging.getLogger("episodic_koopman.service")

#: Every series with its state: from its newest chunk (none: nothing stored yet).
_LOAD_RECORDS = """
SELECT s.sid, s.id, s.incarnation, s.params, s.channels, s.time_kind,
       coalesce(c.start + c.n, 0), c.t_last_int, c.t_last_num, c.tz, c.step_int, c.step_num,
       coalesce(c.run, 0), s.created_at
FROM series AS s LEFT JOIN LATERAL (
    SELECT * FROM chunks WHERE chunks.sid = s.sid ORDER BY start DESC LIMIT 1
) AS c ON true
"""

#: The chunks of a series from the one holding ``seq`` on.
_FETCH_CHUNKS = """
SELECT start, n, t_first_int, t_first_num, t_last_int, t_last_num, t, {y} FROM chunks
WHERE sid = %(sid)s AND start >= coalesce(
    (SELECT start FROM chunks WHERE sid = %(sid)s AND start <= %(seq)s
     ORDER BY start DESC LIMIT 1), 0)
ORDER BY start LIMIT %(limit)s
"""
_FETCH = {True: _FETCH_CHUNKS.format(y="y"), False: _FETCH_CHUNKS.format(y="''::bytea")}


def connect(url: str) -> psycopg.Connection[Any]:
    """An autocommit connection (the committer issues BEGIN itself, as with SQLite)."""
    return psycopg.connect(url, autocommit=True, connect_timeout=30)


def per_thread(url: str) -> ConnectionPerThread[psycopg.Connection[Any]]:
    """A connection per thread to ``url``, reopened if unusable (`_usable`)."""
    return ConnectionPerThread(lambda: connect(url), _usable)


def _usable(conn: psycopg.Connection[Any]) -> bool:
    """Whether a connection can serve another use: open, not broken (a dropped server),
    and idle (autocommit: a transaction still open between uses was left by a failure)."""
    return (
        not (conn.closed or conn.broken)
        and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    )


class PostgresReader(Reader):
    """Read-only queries from any thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conns = per_thread(url)

    def fetch_chunks(
        self, sid: int, seq: int, max_chunks: int, values: bool = True
    ) -> list[StoredChunk]:
        return _fetch(self._conns.get(), sid, seq, max_chunks, values)

    def close(self) -> None:
        self._conns.close()


class PostgresSession(WriteSession):
    """The committer's connection (reopened after a failure that left it broken)."""

    errors = (psycopg.Error,)

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn = connect(url)

    def start(self) -> None:
        """Nothing to maintain: the server checkpoints its own WAL."""

    def close(self) -> None:
        self._conn.close()

    def healthy(self) -> bool:
        return not (self._conn.closed or self._conn.broken)

    def begin(self) -> None:
        if not self.healthy():
            log.warning("reconnecting to the database")
            self._conn = connect(self.url)
        self._conn.execute("BEGIN")

    def commit(self) -> None:
        self._conn.execute("COMMIT")

    def rollback(self) -> None:
        if self.healthy():
            self._conn.execute("ROLLBACK")

    def savepoint(self) -> None:
        self._conn.execute("SAVEPOINT command")

    def rollback_savepoint(self) -> None:
        self._conn.execute("ROLLBACK TO SAVEPOINT command")
        self._conn.execute("RELEASE SAVEPOINT command")

    def release_savepoint(self) -> None:
        self._conn.execute("RELEASE SAVEPOINT command")

    def shard_epochs(self, shards: Iterable[int]) -> dict[int, int]:
        rows = self._conn.execute(
            "SELECT shard, epoch FROM shard_owner WHERE shard = ANY(%s) ORDER BY shard FOR SHARE",
            (sorted(set(shards)),),
        )
        return dict(rows.fetchall())  # type: ignore[arg-type]

    def insert_series(
        self, series_id: str, incarnation: str, params: str, created_at: float
    ) -> int:
        row = self._conn.execute(
            "INSERT INTO series (id, incarnation, params, created_at) VALUES (%s, %s, %s, %s) "
            "RETURNING sid",
            (series_id, incarnation, params, created_at),
        ).fetchone()
        assert row is not None
        return row[0]

    def update_params(self, sid: int, params: str, incarnation: str) -> None:
        self._conn.execute(
            "UPDATE series SET params = %s, incarnation = %s WHERE sid = %s",
            (params, incarnation, sid),
        )
        # The old incarnation's snapshot is useless now. After the series row (a snapshot
        # write share-locks it: service/storage/postgres_snapshots.py), so none slips in.
        self._conn.execute("DELETE FROM snapshots WHERE sid = %s", (sid,))

    def delete_series(self, sid: int) -> None:
        self._conn.execute("DELETE FROM chunks WHERE sid = %s", (sid,))
        self._conn.execute("DELETE FROM series WHERE sid = %s", (sid,))
        self._conn.execute("DELETE FROM snapshots WHERE sid = %s", (sid,))  # as above

    def fetch_chunks(
        self, sid: int, seq: int, max_chunks: int, values: bool = True
    ) -> list[StoredChunk]:
        return _fetch(self._conn, sid, seq, max_chunks, values)

    def insert_chunk(
        self,
        sid: int,
        start: int,
        keys: list[TimeKey],
        values: np.ndarray,
        state: SeriesRecord | None,
    ) -> None:
        first_int, first_num = split_key(keys[0])
        last_int, last_num = split_key(keys[-1])
        step_int, step_num = split_key(None if state is None else state.spacing.step)
        self._conn.execute(
            INSERT_CHUNK,
            (
                sid,
                start,
                len(keys),
                first_int,
                first_num,
                last_int,
                last_num,
                encode_keys(keys),
                encode_values(values),
                None if state is None else state.tz,
                step_int,
                step_num,
                None if state is None else state.spacing.run,
            ),
        )

    def set_layout(self, record: SeriesRecord) -> None:
        self._conn.execute(
            "UPDATE series SET channels = %s, time_kind = %s WHERE sid = %s",
            (
                None if record.channels is None else json.dumps(list(record.channels)),
                record.time_kind,
                record.sid,
            ),
        )


def _fetch(
    conn: psycopg.Connection[Any], sid: int, seq: int, max_chunks: int, values: bool
) -> list[StoredChunk]:
    rows = conn.execute(_FETCH[values], {"sid": sid, "seq": seq, "limit": max_chunks})
    chunks = []
    for start, n, first_int, first_num, last_int, last_num, t, y in rows.fetchall():
        first, last = join_key(first_int, first_num), join_key(last_int, last_num)
        chunks.append(StoredChunk(start, n, first, last, bytes(t), bytes(y)))  # type: ignore[arg-type]
    return chunks


class PostgresStorage(Storage):
    """Series and observations in a PostgreSQL database, shared by any number of servers."""

    embedded = False

    def __init__(self, url: str) -> None:
        self.url = url
        self._n_shards: int | None = None

    def describe(self) -> str:
        parts = conninfo_to_dict(self.url)
        where = f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}"
        return f"postgresql://{where}/{parts.get('dbname', '')}"

    @property
    def n_shards(self) -> int:
        if self._n_shards is None:
            raise RuntimeError("initialise() the storage first")
        return self._n_shards

    def initialise(self) -> None:
        with connect(self.url) as conn, conn.transaction():
            meta = create_or_migrate(conn, self.describe())
        self._n_shards = int(meta.get("shards", DEFAULT_SHARDS))

    def load_records(self) -> dict[str, SeriesRecord]:
        with connect(self.url) as conn:
            rows = conn.execute(_LOAD_RECORDS).fetchall()
        records = {}
        for row in rows:
            sid, sid_text, inc, params, channels, kind, count, li, ln, tz, si, sn, run, made = row
            records[sid_text] = record_from_columns(
                sid,
                sid_text,
                inc,
                params,
                channels,
                kind,
                count,
                join_key(li, ln),
                tz,
                join_key(si, sn),
                run,
                made,
            )
        return records

    def acquire_shards(self, owner: str, shards: Iterable[int] | None = None) -> dict[int, int]:
        wanted = sorted(set(range(self.n_shards) if shards is None else shards))
        with connect(self.url) as conn, conn.transaction():
            # Lock existing rows in shard order first (as writers do), then bump or create.
            conn.execute(
                "SELECT shard FROM shard_owner WHERE shard = ANY(%s) ORDER BY shard FOR UPDATE",
                (wanted,),
            )
            rows = conn.execute(
                "INSERT INTO shard_owner (shard, owner, epoch) "
                "SELECT s, %s, 1 FROM unnest(%s::integer[]) AS s ORDER BY s "
                "ON CONFLICT (shard) DO UPDATE SET owner = excluded.owner, "
                "epoch = shard_owner.epoch + 1 RETURNING shard, epoch",
                (owner, wanted),
            ).fetchall()
        return dict(rows)  # type: ignore[arg-type]

    def owners(self) -> dict[int, tuple[str, int]]:
        with connect(self.url) as conn:
            rows = conn.execute("SELECT shard, owner, epoch FROM shard_owner").fetchall()
        return {shard: (owner, epoch) for shard, owner, epoch in rows}

    def reader(self) -> PostgresReader:
        return PostgresReader(self.url)

    def snapshot_store(self, directory: Path, epochs: dict[int, int]) -> SnapshotStore:
        """Snapshots in the database (``directory`` is not used), fenced with ``epochs``."""
        from .postgres_snapshots import PostgresSnapshotStore  # it imports this module

        return PostgresSnapshotStore(self.url, epochs, self.n_shards)

    def writer(self) -> PostgresSession:
        return PostgresSession(self.url)
