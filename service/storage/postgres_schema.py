"""PostgreSQL's schema (`service.storage.postgres`), and the migration of schema 1's databases.

It mirrors SQLite's (`service.storage.sqlite_schema`): observations in chunks, one row
per push (`service.storage.chunks`). SQLite's time keys are untyped (an integer for ISO
times, a float for numbers); here each chunk's first and last keys have two typed
columns, exactly one of each pair set (`split_key`, `join_key`), and a trigger refuses a
chunk that does not extend its series, so idempotency on ``(series, t)`` is enforced by
the database as in SQLite.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from ..timestamps import TimeKey
from .base import DEFAULT_SHARDS, check_schema_version
from .schema_1 import Schema1Dialect, migrate_from_1

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

#: One chunk row: a session's appends and the migration's.
INSERT_CHUNK = (
    "INSERT INTO chunks (sid, start, n, t_first_int, t_first_num, t_last_int, t_last_num, "
    "t, y, tz, step_int, step_num, run) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %b, %b, %s, %s, %s, %s)"
)


def split_key(key: TimeKey | None) -> tuple[int | None, float | None]:
    """A key as its ``(integer, float)`` column pair (ISO keys are ints, numeric ones floats)."""
    if key is None:
        return None, None
    if isinstance(key, int):
        return key, None
    return None, float(key)


def join_key(integer: int | None, number: float | None) -> TimeKey | None:
    """The key a ``(integer, float)`` column pair holds."""
    return integer if integer is not None else number


def create_or_migrate(conn: psycopg.Connection[Any], where: str) -> dict[str, str]:
    """Create the schema or bring an older one to `SCHEMA_VERSION` (in the caller's
    transaction); returns the ``meta`` the database held before."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_INIT_LOCK,))
    (has_meta,) = conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()
    meta = {}
    if has_meta:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    check_schema_version(meta, SCHEMA_VERSION, where)
    # Schema 2 -> 3 is the new snapshots table: _SCHEMA creates what is missing.
    conn.execute(_SCHEMA)
    (old,) = conn.execute("SELECT to_regclass('observations') IS NOT NULL").fetchone()
    if old:
        log.warning("%s: migrating observations to schema %d", where, 2)
        _migrate_from_1(conn)
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('schema_version', %s) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (str(SCHEMA_VERSION),),
    )
    if "shards" not in meta:
        conn.execute("INSERT INTO meta (key, value) VALUES ('shards', %s)", (str(DEFAULT_SHARDS),))
    return meta


#: Schema 1's observations (``seq, t_int, t_num, y``) and series state.
_FROM_1 = Schema1Dialect(
    series="SELECT sid, tz, step_int, step_num, run FROM series",
    observations="SELECT seq, t_int, t_num, y FROM observations WHERE sid = %s ORDER BY seq",
    insert_chunk=INSERT_CHUNK,
    key=lambda row: join_key(row[1], row[2]),
    chunk_params=lambda sid, start, keys, t, y, state: (
        sid,
        start,
        len(keys),
        *split_key(keys[0]),
        *split_key(keys[-1]),
        t,
        y,
        *(state or (None, None, None, None)),
    ),
)


def _migrate_from_1(conn: psycopg.Connection[Any]) -> None:
    """Schema 1 -> 2 (`service.storage.schema_1`).

    Servers of the old schema may still be pushing: they do not take the init lock.
    Locking both tables first waits for their open pushes and blocks new ones until the
    migration commits (then they fail on the dropped table, unacknowledged), so no
    acknowledged observation is read before it commits and dropped after.
    """
    conn.execute("LOCK TABLE series, observations IN EXCLUSIVE MODE")
    migrate_from_1(conn, _FROM_1)
