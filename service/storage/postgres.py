"""The server backend: PostgreSQL through psycopg 3 (``EPISODIC_KOOPMAN_DATABASE=postgresql://...``).

The schema mirrors SQLite's. SQLite's time keys are untyped (an integer for ISO times,
a float for numbers); here each key has two typed columns, exactly one of them set,
each with its own unique index on ``(sid, key)``, so idempotency on ``(series, t)`` is a
database constraint as it is in SQLite. Values stay float64 bytes (``bytea``), and
parameters and channels JSON text, so both backends round-trip them bit for bit.

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
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ..timestamps import TimeKey
from .base import DEFAULT_SHARDS, Reader, Storage, WriteSession
from .records import SeriesRecord, record_from_columns

log = logging.getLogger("episodic_koopman.service")

SCHEMA_VERSION = 1
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
CREATE TABLE IF NOT EXISTS observations (
    sid bigint NOT NULL,
    seq bigint NOT NULL,
    t_int bigint,                -- ISO times: microseconds since 1970 UTC
    t_num double precision,      -- numeric times
    y bytea NOT NULL,            -- float64 values in channel order
    PRIMARY KEY (sid, seq),
    CHECK ((t_int IS NULL) <> (t_num IS NULL))
);
-- Partial: a series uses one kind of time, so each row is in exactly one of them.
CREATE UNIQUE INDEX IF NOT EXISTS observations_t_int ON observations (sid, t_int)
    WHERE t_int IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS observations_t_num ON observations (sid, t_num)
    WHERE t_num IS NOT NULL;
CREATE OR REPLACE FUNCTION observations_append_only() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN RAISE EXCEPTION 'observations are append-only'; END $$;
CREATE OR REPLACE TRIGGER observations_append_only BEFORE UPDATE ON observations
FOR EACH STATEMENT EXECUTE FUNCTION observations_append_only();
CREATE TABLE IF NOT EXISTS shard_owner (
    shard integer PRIMARY KEY,
    owner text NOT NULL,
    epoch bigint NOT NULL        -- bumped by every acquisition (fencing)
);
"""

_SERIES_COLUMNS = (
    "sid, id, incarnation, params, channels, time_kind, count, last_key_int, last_key_num, tz, "
    "step_int, step_num, run, created_at"
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


class PostgresReader(Reader):
    """Read-only queries from any thread (one connection per thread, reopened if broken)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._local = threading.local()
        self._all: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()

    def _conn(self) -> psycopg.Connection[Any]:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            conn = connect(self.url)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def times(self, sid: int, seqs: list[int]) -> dict[int, TimeKey]:
        wanted = sorted({s for s in seqs if s >= 0})
        if not wanted:
            return {}
        rows = self._conn().execute(
            "SELECT seq, t_int, t_num FROM observations WHERE sid = %s AND seq = ANY(%s)",
            (sid, wanted),
        )
        return {seq: _join(i, f) for seq, i, f in rows.fetchall()}  # type: ignore[misc]

    def page(self, sid: int, offset: int, limit: int) -> list[tuple[int, TimeKey, bytes]]:
        rows = self._conn().execute(
            "SELECT seq, t_int, t_num, y FROM observations WHERE sid = %s AND seq >= %s "
            "ORDER BY seq LIMIT %s",
            (sid, offset, limit),
        )
        return [(seq, _join(i, f), y) for seq, i, f, y in rows.fetchall()]  # type: ignore[misc]

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()


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

    def delete_series(self, sid: int) -> None:
        self._conn.execute("DELETE FROM observations WHERE sid = %s", (sid,))
        self._conn.execute("DELETE FROM series WHERE sid = %s", (sid,))

    def stored_values(self, sid: int, low: TimeKey, high: TimeKey) -> dict[TimeKey, bytes]:
        column = "t_int" if isinstance(low, int) else "t_num"
        rows = self._conn.execute(
            f"SELECT {column}, y FROM observations "
            f"WHERE sid = %s AND {column} >= %s AND {column} <= %s",
            (sid, low, high),
        )
        return dict(rows.fetchall())  # type: ignore[arg-type]

    def insert_observations(
        self, sid: int, start: int, keys: list[TimeKey], blobs: list[bytes]
    ) -> None:
        # One statement whatever the batch size: arrays, unnested server-side.
        if isinstance(keys[0], int):
            column, array = "t_int", "bigint[]"
        else:
            column, array = "t_num", "double precision[]"
            keys = [float(k) for k in keys]
        self._conn.execute(
            f"INSERT INTO observations (sid, seq, {column}, y) "
            f"SELECT %s, %s + u.n - 1, u.t, u.y "
            f"FROM unnest(%s::{array}, %b::bytea[]) WITH ORDINALITY AS u(t, y, n)",
            (sid, start, keys, blobs),
        )

    def update_series_state(self, record: SeriesRecord) -> None:
        last_int, last_num = _split(record.last_key)
        step_int, step_num = _split(record.spacing.step)
        self._conn.execute(
            "UPDATE series SET channels = %s, time_kind = %s, count = %s, last_key_int = %s, "
            "last_key_num = %s, tz = %s, step_int = %s, step_num = %s, run = %s WHERE sid = %s",
            (
                None if record.channels is None else json.dumps(list(record.channels)),
                record.time_kind,
                record.count,
                last_int,
                last_num,
                record.tz,
                step_int,
                step_num,
                record.spacing.run,
                record.sid,
            ),
        )


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
            conn.execute(_SCHEMA)
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            version = meta.get("schema_version")
            if version is None:
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', %s)",
                    (str(SCHEMA_VERSION),),
                )
            elif int(version) > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.describe()} has schema version {version}; "
                    f"this server reads up to {SCHEMA_VERSION}"
                )
            if "shards" not in meta:
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('shards', %s)", (str(DEFAULT_SHARDS),)
                )
            self._n_shards = int(meta.get("shards", DEFAULT_SHARDS))

    def load_records(self) -> dict[str, SeriesRecord]:
        with connect(self.url) as conn:
            rows = conn.execute(f"SELECT {_SERIES_COLUMNS} FROM series").fetchall()
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

    def writer(self) -> PostgresSession:
        return PostgresSession(self.url)
