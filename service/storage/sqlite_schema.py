"""SQLite's schema (`service.storage.sqlite`), and the migrations of older schemas' databases."""

from __future__ import annotations

import logging
import sqlite3

from .base import DEFAULT_SHARDS, check_schema_version
from .schema_1 import Schema1Dialect, migrate_from_1

log = logging.getLogger("episodic_koopman.service")

#: 2: observations in chunks (one row per push), series state in them; 3: no index on
#: chunks (sid, start): the chunk directory (in memory) finds them and checks appends;
#: 4: deleted series are logged, so a directory catches up with only what changed.
SCHEMA_VERSION = 4
#: Page size of new databases (existing ones keep theirs). A commit writes every page it
#: changes whole (to the WAL, then once more at a checkpoint); pushes change only the
#: newest pages of ``chunks`` (shared by all series: rows go in arrival order). Small
#: pages keep that near the data's size.
PAGE_SIZE = 512
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS series (
    sid INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, so a stale sid cannot alias
    id TEXT NOT NULL UNIQUE,
    incarnation TEXT NOT NULL,              -- changes when the model must be rebuilt
    params TEXT NOT NULL,                   -- every constructor parameter, as JSON
    channels TEXT,                          -- JSON list, or NULL for a single series
    time_kind TEXT,
    -- Schema 1 kept the state here (rewriting this row on every push); from schema 2 the
    -- newest chunk holds it, and these columns are left as migrated.
    count INTEGER NOT NULL DEFAULT 0,
    last_key,
    tz INTEGER,
    step,
    run INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (         -- service/storage/chunks.py
    cid INTEGER PRIMARY KEY,                -- arrival order: new rows go to the last page
                                            -- (no other index: chunk_directory.py)
    sid INTEGER NOT NULL,
    start INTEGER NOT NULL,                 -- seq (the library's index) of the first one
    n INTEGER NOT NULL CHECK (n > 0),
    t_first NOT NULL,                       -- untyped: INTEGER for ISO times, REAL for numbers
    t_last NOT NULL,
    t BLOB NOT NULL,                        -- n keys, int64 or float64 (as t_first's type);
                                            -- empty if evenly spaced (chunks.encode_keys)
    y BLOB NOT NULL,                        -- n x channels float64, row-major
    tz INTEGER,                             -- the series' state after this chunk: zone,
    step,                                   -- spacing step
    run INTEGER                             -- and run (NULL in chunks migrated from schema 1,
                                            -- except each series' newest)
);
-- That a chunk extends its series (next seq, later t) is checked by the writer against the
-- chunk directory (schema 2's trigger used the index on (sid, start) that schema 3 drops).
CREATE TRIGGER IF NOT EXISTS chunks_append_only BEFORE UPDATE ON chunks
BEGIN SELECT RAISE(ABORT, 'observations are append-only'); END;
-- Each deleted series, in order: another handle's chunk directory drops just these when it
-- catches up (chunk_directory.py), instead of comparing every series it knows.
CREATE TABLE IF NOT EXISTS series_gone (
    gone INTEGER PRIMARY KEY,               -- rows are never deleted: only ever increases
    sid INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS series_delete_logged AFTER DELETE ON series
BEGIN INSERT INTO series_gone (sid) VALUES (OLD.sid); END;
CREATE TABLE IF NOT EXISTS shard_owner (
    shard INTEGER PRIMARY KEY,
    owner TEXT NOT NULL,
    epoch INTEGER NOT NULL                  -- bumped by every acquisition (fencing)
);
"""

#: Schema 2 -> 3: the index and the trigger that used it go (the directory replaces both).
_FROM_2 = ["DROP TRIGGER IF EXISTS chunks_extend", "DROP INDEX IF EXISTS chunks_series"]


def _statements(script: str) -> list[str]:
    """A script's statements (``executescript`` would commit the caller's transaction)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return statements


#: Schema 1's observations (``seq, t_key, y``) and series state (``tz, step, run``).
_FROM_1 = Schema1Dialect(
    series="SELECT sid, tz, step, run FROM series",
    observations="SELECT seq, t_key, y FROM observations WHERE sid = ? ORDER BY seq",
    insert_chunk=(
        "INSERT INTO chunks (sid, start, n, t_first, t_last, t, y, tz, step, run) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ),
    key=lambda row: row[1],
    chunk_params=lambda sid, start, keys, t, y, state: (
        sid,
        start,
        len(keys),
        keys[0],
        keys[-1],
        t,
        y,
        *(state or (None, None, None)),
    ),
)


def create_or_migrate(
    conn: sqlite3.Connection, tables: set[str], meta: dict[str, str], where: str
) -> None:
    """Create the schema or bring an older one to `SCHEMA_VERSION` (in the caller's
    transaction; ``tables`` and ``meta``: what the database holds now)."""
    check_schema_version(meta, SCHEMA_VERSION, where)
    for statement in _statements(_SCHEMA):
        conn.execute(statement)
    if "observations" in tables:
        log.warning("%s: migrating observations to schema %d", where, 2)
        migrate_from_1(conn, _FROM_1)
    if int(meta.get("schema_version", SCHEMA_VERSION)) < 3:
        log.warning("%s: schema 3 drops the index on chunks", where)
    # Schema 3 -> 4 is the deletion log and its trigger: _SCHEMA creates them (a deletion
    # before them is in no chunk directory built from now on).
    for statement in _FROM_2:
        conn.execute(statement)
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (str(SCHEMA_VERSION),),
    )
    if "shards" not in meta:  # databases from before fencing get it here too
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('shards', ?)",
            (str(DEFAULT_SHARDS),),
        )
