"""The embedded backend: one SQLite file in the data dir (the default).

WAL mode with ``synchronous=FULL``: a commit returns once the WAL is synced. The
committer's connection never checkpoints; a background thread does, so commits only
ever sync the WAL. Readers use one connection per thread (WAL readers never block).
One server per data dir (`service.main` locks it), so fencing here guards against a
stale `Committer` in the same process; it is the same code path as PostgreSQL's.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..timestamps import TimeKey
from .base import DEFAULT_SHARDS, Reader, Storage, WriteSession, check_schema_version
from .chunks import MAX_CHUNK, StoredChunk, encode_keys, encode_values
from .records import SeriesRecord, record_from_columns

log = logging.getLogger("episodic_koopman.service")

SCHEMA_VERSION = 2  # 2: observations in chunks (one row per push), series state in them
#: Page size of new databases (existing ones keep theirs). A commit writes every page it
#: changes whole (to the WAL, then once more at a checkpoint), and a push changes about
#: two: the newest page of ``chunks`` (shared by all series: rows go in arrival order)
#: and its series' leaf of ``chunks_series``. Small pages keep that near the data's size.
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
    sid INTEGER NOT NULL,
    start INTEGER NOT NULL,                 -- seq (the library's index) of the first one
    n INTEGER NOT NULL CHECK (n > 0),
    t_first NOT NULL,                       -- untyped: INTEGER for ISO times, REAL for numbers
    t_last NOT NULL,
    t BLOB NOT NULL,                        -- n keys, int64 or float64 (as t_first's type)
    y BLOB NOT NULL,                        -- n x channels float64, row-major
    tz INTEGER,                             -- the series' state after this chunk: zone,
    step,                                   -- spacing step
    run INTEGER                             -- and run (NULL in chunks migrated from schema 1,
                                            -- except each series' newest)
);
CREATE UNIQUE INDEX IF NOT EXISTS chunks_series ON chunks (sid, start);
-- A chunk must extend its series: the next seq, and a first t above the stored last t.
CREATE TRIGGER IF NOT EXISTS chunks_extend BEFORE INSERT ON chunks
WHEN NEW.start IS NOT coalesce(
        (SELECT start + n FROM chunks WHERE sid = NEW.sid ORDER BY start DESC LIMIT 1), 0)
    OR NEW.t_first <= (SELECT t_last FROM chunks WHERE sid = NEW.sid ORDER BY start DESC LIMIT 1)
    OR NEW.t_last < NEW.t_first
BEGIN SELECT RAISE(ABORT, 'a chunk must extend its series (next seq, later t)'); END;
CREATE TRIGGER IF NOT EXISTS chunks_append_only BEFORE UPDATE ON chunks
BEGIN SELECT RAISE(ABORT, 'observations are append-only'); END;
CREATE TABLE IF NOT EXISTS shard_owner (
    shard INTEGER PRIMARY KEY,
    owner TEXT NOT NULL,
    epoch INTEGER NOT NULL                  -- bumped by every acquisition (fencing)
);
"""

#: Every series with its state: from its newest chunk (none: nothing stored yet).
_LOAD_RECORDS = """
SELECT s.sid, s.id, s.incarnation, s.params, s.channels, s.time_kind,
       coalesce(c.start + c.n, 0), c.t_last, c.tz, c.step, coalesce(c.run, 0), s.created_at
FROM series AS s LEFT JOIN chunks AS c
  ON c.sid = s.sid AND c.start = (SELECT max(start) FROM chunks WHERE sid = s.sid)
"""

#: The chunks of a series from the one holding ``seq`` on (?1 sid, ?2 seq, ?3 limit).
_FETCH_CHUNKS = """
SELECT start, t_first, t, {y} FROM chunks
WHERE sid = ?1 AND start >= coalesce(
    (SELECT start FROM chunks WHERE sid = ?1 AND start <= ?2 ORDER BY start DESC LIMIT 1), 0)
ORDER BY start LIMIT ?3
"""
_FETCH = {True: _FETCH_CHUNKS.format(y="y"), False: _FETCH_CHUNKS.format(y="x''")}

#: Seconds between background WAL checkpoints. A checkpoint copies every page changed
#: since the last one into the database file: rarer ones copy each hot page once for
#: many commits (the WAL grows meanwhile: about a kilobyte per push).
CHECKPOINT_SECONDS = 30.0


def _statements(script: str) -> list[str]:
    """A script's statements (``executescript`` would commit the caller's transaction)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return statements


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    """A connection with the durability settings (WAL, synchronous=FULL)."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA busy_timeout = 30000")
    if not readonly:
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # before WAL mode: a new file takes it
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


class SqliteReader(Reader):
    """Read-only queries from any thread (one connection per thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, readonly=True)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def fetch_chunks(
        self, sid: int, seq: int, max_chunks: int, values: bool = True
    ) -> list[StoredChunk]:
        return _fetch(self._conn(), sid, seq, max_chunks, values)

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()


class SqliteSession(WriteSession):
    """The committer's connection, plus the thread that checkpoints the WAL."""

    errors = (sqlite3.Error,)

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = connect(path)
        # Checkpoints (copying the WAL into the database) run in their own thread, so that
        # commits only ever sync the WAL.
        self._conn.execute("PRAGMA wal_autocheckpoint = 0")
        self._checkpointer = threading.Thread(
            target=self._checkpoint, name="checkpoint", daemon=True
        )
        self._stopping = threading.Event()

    def start(self) -> None:
        self._checkpointer.start()

    def _checkpoint(self) -> None:
        conn = connect(self.path)
        try:
            while not self._stopping.wait(CHECKPOINT_SECONDS):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error:
                    log.exception("WAL checkpoint failed (will retry)")
        finally:
            conn.close()

    def close(self) -> None:
        self._stopping.set()
        if self._checkpointer.is_alive():
            self._checkpointer.join()
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            log.exception("final WAL checkpoint failed (the WAL is replayed at the next start)")
        self._conn.close()

    def begin(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")  # the write lock now: epochs cannot move under us

    def commit(self) -> None:
        self._conn.execute("COMMIT")

    def rollback(self) -> None:
        self._conn.execute("ROLLBACK")

    def savepoint(self) -> None:
        self._conn.execute("SAVEPOINT command")

    def rollback_savepoint(self) -> None:
        self._conn.execute("ROLLBACK TO command")
        self._conn.execute("RELEASE command")

    def release_savepoint(self) -> None:
        self._conn.execute("RELEASE command")

    def shard_epochs(self, shards: Iterable[int]) -> dict[int, int]:
        wanted = sorted(set(shards))
        marks = ",".join("?" * len(wanted))
        rows = self._conn.execute(
            f"SELECT shard, epoch FROM shard_owner WHERE shard IN ({marks})", wanted
        )
        return dict(rows.fetchall())

    def insert_series(
        self, series_id: str, incarnation: str, params: str, created_at: float
    ) -> int:
        cursor = self._conn.execute(
            "INSERT INTO series (id, incarnation, params, created_at) VALUES (?, ?, ?, ?)",
            (series_id, incarnation, params, created_at),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def update_params(self, sid: int, params: str, incarnation: str) -> None:
        self._conn.execute(
            "UPDATE series SET params = ?, incarnation = ? WHERE sid = ?",
            (params, incarnation, sid),
        )

    def delete_series(self, sid: int) -> None:
        self._conn.execute("DELETE FROM chunks WHERE sid = ?", (sid,))
        self._conn.execute("DELETE FROM series WHERE sid = ?", (sid,))

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
        self._conn.execute(
            "INSERT INTO chunks (sid, start, n, t_first, t_last, t, y, tz, step, run) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                sid,
                start,
                len(keys),
                keys[0],
                keys[-1],
                encode_keys(keys),
                encode_values(values),
                None if state is None else state.tz,
                None if state is None else state.spacing.step,
                None if state is None else state.spacing.run,
            ),
        )

    def set_layout(self, record: SeriesRecord) -> None:
        self._conn.execute(
            "UPDATE series SET channels = ?, time_kind = ? WHERE sid = ?",
            (
                None if record.channels is None else json.dumps(list(record.channels)),
                record.time_kind,
                record.sid,
            ),
        )


def _fetch(
    conn: sqlite3.Connection, sid: int, seq: int, max_chunks: int, values: bool
) -> list[StoredChunk]:
    rows = conn.execute(_FETCH[values], (sid, seq, max_chunks)).fetchall()
    return [StoredChunk(*row) for row in rows]


def _migrate_from_1(conn: sqlite3.Connection) -> None:
    """Schema 1 -> 2 (in the caller's transaction): each series' observation rows become
    chunks of up to `MAX_CHUNK`, its newest chunk takes the state from its series
    row, and the old table goes."""
    series = conn.execute("SELECT sid, tz, step, run FROM series").fetchall()
    for sid, tz, step, run in series:
        rows = conn.execute(
            "SELECT seq, t_key, y FROM observations WHERE sid = ? ORDER BY seq", (sid,)
        ).fetchall()
        for at in range(0, len(rows), MAX_CHUNK):
            part = rows[at : at + MAX_CHUNK]
            keys = [key for _, key, _ in part]
            newest = at + MAX_CHUNK >= len(rows)
            conn.execute(
                "INSERT INTO chunks (sid, start, n, t_first, t_last, t, y, tz, step, run) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    sid,
                    part[0][0],
                    len(part),
                    keys[0],
                    keys[-1],
                    encode_keys(keys),
                    b"".join(y for _, _, y in part),
                    tz if newest else None,
                    step if newest else None,
                    run if newest else None,
                ),
            )
    conn.execute("DROP TABLE observations")


class SqliteStorage(Storage):
    """Series and observations in one SQLite file."""

    embedded = True

    def __init__(self, path: Path) -> None:
        self.path = path
        self._n_shards: int | None = None

    def describe(self) -> str:
        return str(self.path)

    @property
    def n_shards(self) -> int:
        if self._n_shards is None:
            raise RuntimeError("initialise() the storage first")
        return self._n_shards

    def initialise(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = connect(self.path)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                old = {
                    name
                    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
                }
                meta = {}
                if "meta" in old:
                    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
                check_schema_version(meta, SCHEMA_VERSION, str(self.path))
                for statement in _statements(_SCHEMA):
                    conn.execute(statement)
                if "observations" in old:
                    log.warning("%s: migrating observations to schema %d", self.path, 2)
                    _migrate_from_1(conn)
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
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._n_shards = int(meta.get("shards", DEFAULT_SHARDS))
        finally:
            conn.close()

    def load_records(self) -> dict[str, SeriesRecord]:
        conn = connect(self.path)
        try:
            rows = conn.execute(_LOAD_RECORDS).fetchall()
        finally:
            conn.close()
        return {row[1]: record_from_columns(*row) for row in rows}

    def acquire_shards(self, owner: str, shards: Iterable[int] | None = None) -> dict[int, int]:
        wanted = sorted(set(range(self.n_shards) if shards is None else shards))
        conn = connect(self.path)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                epochs = {}
                for shard in wanted:
                    (epoch,) = conn.execute(
                        "INSERT INTO shard_owner (shard, owner, epoch) VALUES (?, ?, 1) "
                        "ON CONFLICT (shard) DO UPDATE SET owner = excluded.owner, "
                        "epoch = shard_owner.epoch + 1 RETURNING epoch",
                        (shard, owner),
                    ).fetchone()
                    epochs[shard] = epoch
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()
        return epochs

    def owners(self) -> dict[int, tuple[str, int]]:
        conn = connect(self.path)
        try:
            rows = conn.execute("SELECT shard, owner, epoch FROM shard_owner").fetchall()
        finally:
            conn.close()
        return {shard: (owner, epoch) for shard, owner, epoch in rows}

    def reader(self) -> SqliteReader:
        return SqliteReader(self.path)

    def writer(self) -> SqliteSession:
        return SqliteSession(self.path)
