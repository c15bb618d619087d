"""The server backend: PostgreSQL through psycopg 3 (``EPISODIC_KOOPMAN_DATABASE=postgresql://...``).

The schema mirrors SQLite's: observations in chunks, one row per push
(`service.storage.chunks`). SQLite's time keys are untyped (an integer for ISO times,
a float for numbers); here each chunk's first and last keys have two typed columns,
exactly one of each pair set, and a trigger refuses a chunk that does not extend its
series, so idempotency on ``(series, t)`` is enforced by the database as in SQLite.
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
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg.conninfo import conninfo_to_dict

from ..snapshots import SnapshotStore
from ..timestamps import TimeKey
from .base import DEFAULT_SHARDS, Reader, Storage, WriteSession, check_schema_version
from .chunks import MAX_CHUNK, StoredChunk, encode_keys, encode_values
from .records import SeriesRecord, record_from_columns

log = logging.getLogger("episodic_koopman.service")

#: 2: observations in chunks (one row per push), series state in them; 3: snapshots.
SCHEMA_VERSION = 3
#: Serialises schema creation between servers starting at once (an advisory lock key).
_INIT_LOCK = 0x6B6F6F70
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS series (
    sid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- never reused
    id text NOT NULL UNIQUE,
    incarnation text NOT NULL,
    params text NOT NULL,
    channels text,
    time_kind text,
    count bigint NOT NULL DEFAULT 0,
    last_key_int bigint,
    last_key_num double precision,
    tz integer,
    step_int bigint,
    step_num double precision,
    run bigint NOT NULL DEFAULT 0,
    created_at double precision NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (        -- service/storage/chunks.py
    sid bigint NOT NULL,
    start bigint NOT NULL,       -- seq (the library's index) of the first observation
    n integer NOT NULL CHECK (n > 0),
    t_first_int bigint,          -- ISO times: microseconds since 1970 UTC
    t_first_num double precision,  -- numeric times
    t_last_int bigint,
    t_last_num double precision,
    t bytea NOT NULL,            -- n keys, int64 or float64 (as the set t_first column)
    y bytea NOT NULL,            -- n x channels float64, row-major
    tz integer,                  -- the series' state after this chunk (NULL in chunks
    step_int bigint,             -- migrated from schema 1, except each series' newest)
    step_num double precision,
    run bigint,
    PRIMARY KEY (sid, start),
    CHECK ((t_first_int IS NULL) <> (t_first_num IS NULL)),
    CHECK ((t_last_int IS NULL) = (t_first_int IS NULL))
);
-- A chunk must extend its series: the next seq, and a first t above the stored last t.
CREATE OR REPLACE FUNCTION chunks_extend() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE last chunks%ROWTYPE;
BEGIN
    SELECT * INTO last FROM chunks WHERE sid = NEW.sid ORDER BY start DESC LIMIT 1;
    IF NEW.start <> coalesce(last.start + last.n, 0)
        OR NEW.t_first_int <= last.t_last_int OR NEW.t_first_num <= last.t_last_num
        OR NEW.t_last_int < NEW.t_first_int OR NEW.t_last_num < NEW.t_first_num
    THEN
        RAISE EXCEPTION 'a chunk must extend its series (next seq, later t)';
    END IF;
    RETURN NEW;
END $$;
CREATE OR REPLACE TRIGGER chunks_extend BEFORE INSERT ON chunks
FOR EACH ROW EXECUTE FUNCTION chunks_extend();
CREATE OR REPLACE FUNCTION observations_append_only() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN RAISE EXCEPTION 'observations are append-only'; END $$;
CREATE OR REPLACE TRIGGER chunks_append_only BEFORE UPDATE ON chunks
FOR EACH STATEMENT EXECUTE FUNCTION observations_append_only();
CREATE TABLE IF NOT EXISTS shard_owner (
    shard integer PRIMARY KEY,
    owner text NOT NULL,
    epoch bigint NOT NULL        -- bumped by every acquisition (fencing)
);
CREATE TABLE IF NOT EXISTS snapshots (     -- service/storage/postgres_snapshots.py
    incarnation text PRIMARY KEY,  -- one row per incarnation: its newest snapshot
    sid bigint NOT NULL,
    shard integer NOT NULL,      -- the series' ownership shard (records.shard_of)
    seq bigint NOT NULL CHECK (seq > 0),
    size integer NOT NULL,
    model bytea NOT NULL         -- a model file (episodic_koopman.persistence)
);
CREATE INDEX IF NOT EXISTS snapshots_shard ON snapshots (shard);
CREATE INDEX IF NOT EXISTS snapshots_sid ON snapshots (sid);
-- Out of line, uncompressed: float arrays barely compress, and pglz would cost every write.
ALTER TABLE snapshots ALTER COLUMN model SET STORAGE EXTERNAL;
"""

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

_INSERT_CHUNK = (
    "INSERT INTO chunks (sid, start, n, t_first_int, t_first_num, t_last_int, t_last_num, "
    "t, y, tz, step_int, step_num, run) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %b, %b, %s, %s, %s, %s)"
)


def _split(key: TimeKey | None) -> tuple[int | None, float | None]:
    """A key as its ``(integer, float)`` column pair (ISO keys are ints, numeric ones floats)."""
    if key is None:
        return None, None
    if isinstance(key, int):
        return key, None
    return None, float(key)


def _join(integer: int | None, number: float | None) -> TimeKey | None:
    return integer if integer is not None else number


def connect(url: str) -> psycopg.Connection[Any]:
    """An autocommit connection (the committer issues BEGIN itself, as with SQLite)."""
    return psycopg.connect(url, autocommit=True, connect_timeout=30)


class ConnectionPerThread:
    """One connection per thread, reopened if broken; `close` closes them all."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._local = threading.local()
        self._all: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()

    def get(self) -> psycopg.Connection[Any]:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            conn = connect(self.url)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()


class PostgresReader(Reader):
    """Read-only queries from any thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conns = ConnectionPerThread(url)

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
        first_int, first_num = _split(keys[0])
        last_int, last_num = _split(keys[-1])
        step_int, step_num = _split(None if state is None else state.spacing.step)
        self._conn.execute(
            _INSERT_CHUNK,
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
    return [
        StoredChunk(
            start, n, _join(first_int, first_num), _join(last_int, last_num), bytes(t), bytes(y)
        )  # type: ignore[arg-type]
        for start, n, first_int, first_num, last_int, last_num, t, y in rows.fetchall()
    ]


def _migrate_from_1(conn: psycopg.Connection[Any]) -> None:
    """Schema 1 -> 2 (in the caller's transaction): each series' observation rows become
    chunks of up to `MAX_CHUNK`, its newest chunk takes the state from its series
    row, and the old table goes.

    Servers of the old schema may still be pushing: they do not take the init lock.
    Locking both tables first waits for their open pushes and blocks new ones until the
    migration commits (then they fail on the dropped table, unacknowledged), so no
    acknowledged observation is read before it commits and dropped after.
    """
    conn.execute("LOCK TABLE series, observations IN EXCLUSIVE MODE")
    series = conn.execute("SELECT sid, tz, step_int, step_num, run FROM series").fetchall()
    for sid, tz, step_int, step_num, run in series:
        rows = conn.execute(
            "SELECT seq, t_int, t_num, y FROM observations WHERE sid = %s ORDER BY seq", (sid,)
        ).fetchall()
        for at in range(0, len(rows), MAX_CHUNK):
            part = rows[at : at + MAX_CHUNK]
            keys = [_join(t_int, t_num) for _, t_int, t_num, _ in part]
            first_int, first_num = _split(keys[0])
            last_int, last_num = _split(keys[-1])
            newest = at + MAX_CHUNK >= len(rows)
            conn.execute(
                _INSERT_CHUNK,
                (
                    sid,
                    part[0][0],
                    len(part),
                    first_int,
                    first_num,
                    last_int,
                    last_num,
                    encode_keys(keys),  # type: ignore[arg-type]
                    b"".join(bytes(y) for *_, y in part),
                    tz if newest else None,
                    step_int if newest else None,
                    step_num if newest else None,
                    run if newest else None,
                ),
            )
    conn.execute("DROP TABLE observations")


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
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_INIT_LOCK,))
            (has_meta,) = conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()
            meta = {}
            if has_meta:
                meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            check_schema_version(meta, SCHEMA_VERSION, self.describe())
            # Schema 2 -> 3 is the new snapshots table: _SCHEMA creates what is missing.
            conn.execute(_SCHEMA)
            (old,) = conn.execute("SELECT to_regclass('observations') IS NOT NULL").fetchone()
            if old:
                log.warning("%s: migrating observations to schema %d", self.describe(), 2)
                _migrate_from_1(conn)
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )
            if "shards" not in meta:
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('shards', %s)", (str(DEFAULT_SHARDS),)
                )
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
                _join(li, ln),
                tz,
                _join(si, sn),
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
