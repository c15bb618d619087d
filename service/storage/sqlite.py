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

from ..timestamps import TimeKey
from .base import DEFAULT_SHARDS, Reader, Storage, WriteSession
from .records import SeriesRecord, record_from_columns

log = logging.getLogger("episodic_koopman.service")

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS series (
    sid INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, so a stale sid cannot alias
    id TEXT NOT NULL UNIQUE,
    incarnation TEXT NOT NULL,              -- changes when the model must be rebuilt
    params TEXT NOT NULL,                   -- every constructor parameter, as JSON
    channels TEXT,                          -- JSON list, or NULL for a single series
    time_kind TEXT,
    count INTEGER NOT NULL DEFAULT 0,
    last_key,                               -- untyped: INTEGER for ISO times, REAL for numbers
    tz INTEGER,
    step,
    run INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS observations (
    sid INTEGER NOT NULL,
    seq INTEGER NOT NULL,                   -- the library's observation index
    t_key NOT NULL,
    y BLOB NOT NULL,                        -- float64 values in channel order
    PRIMARY KEY (sid, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS observations_t ON observations (sid, t_key);
CREATE TRIGGER IF NOT EXISTS observations_append_only BEFORE UPDATE ON observations
BEGIN SELECT RAISE(ABORT, 'observations are append-only'); END;
CREATE TABLE IF NOT EXISTS shard_owner (
    shard INTEGER PRIMARY KEY,
    owner TEXT NOT NULL,
    epoch INTEGER NOT NULL                  -- bumped by every acquisition (fencing)
);
"""

_SERIES_COLUMNS = (
    "sid, id, incarnation, params, channels, time_kind, count, last_key, tz, step, run, created_at"
)

#: Seconds between background WAL checkpoints.
CHECKPOINT_SECONDS = 1.0


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    """A connection with the durability settings (WAL, synchronous=FULL)."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA busy_timeout = 30000")
    if not readonly:
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

    def times(self, sid: int, seqs: list[int]) -> dict[int, TimeKey]:
        wanted = sorted({s for s in seqs if s >= 0})
        if not wanted:
            return {}
        marks = ",".join("?" * len(wanted))
        rows = self._conn().execute(
            f"SELECT seq, t_key FROM observations WHERE sid = ? AND seq IN ({marks})",
            (sid, *wanted),
        )
        return dict(rows.fetchall())

    def page(self, sid: int, offset: int, limit: int) -> list[tuple[int, TimeKey, bytes]]:
        return (
            self._conn()
            .execute(
                "SELECT seq, t_key, y FROM observations WHERE sid = ? AND seq >= ? "
                "ORDER BY seq LIMIT ?",
                (sid, offset, limit),
            )
            .fetchall()
        )

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
        self._conn.execute("DELETE FROM observations WHERE sid = ?", (sid,))
        self._conn.execute("DELETE FROM series WHERE sid = ?", (sid,))

    def stored_values(self, sid: int, low: TimeKey, high: TimeKey) -> dict[TimeKey, bytes]:
        return dict(
            self._conn.execute(
                "SELECT t_key, y FROM observations WHERE sid = ? AND t_key >= ? AND t_key <= ?",
                (sid, low, high),
            ).fetchall()
        )

    def insert_observations(
        self, sid: int, start: int, keys: list[TimeKey], blobs: list[bytes]
    ) -> None:
        self._conn.executemany(
            "INSERT INTO observations (sid, seq, t_key, y) VALUES (?, ?, ?, ?)",
            [
                (sid, start + j, key, blob)
                for j, (key, blob) in enumerate(zip(keys, blobs, strict=True))
            ],
        )

    def update_series_state(self, record: SeriesRecord) -> None:
        self._conn.execute(
            "UPDATE series SET channels = ?, time_kind = ?, count = ?, last_key = ?, tz = ?, "
            "step = ?, run = ? WHERE sid = ?",
            (
                None if record.channels is None else json.dumps(list(record.channels)),
                record.time_kind,
                record.count,
                record.last_key,
                record.tz,
                record.spacing.step,
                record.spacing.run,
                record.sid,
            ),
        )


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
            conn.executescript(_SCHEMA)
            conn.execute("BEGIN IMMEDIATE")
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            version = meta.get("schema_version")
            if version is None:
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            elif int(version) > SCHEMA_VERSION:
                conn.execute("ROLLBACK")
                raise RuntimeError(
                    f"{self.path} has schema version {version}; "
                    f"this server reads up to {SCHEMA_VERSION}"
                )
            if "shards" not in meta:  # databases from before fencing get it here too
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('shards', ?)", (str(DEFAULT_SHARDS),)
                )
            conn.execute("COMMIT")
            self._n_shards = int(meta.get("shards", DEFAULT_SHARDS))
        finally:
            conn.close()

    def load_records(self) -> dict[str, SeriesRecord]:
        conn = connect(self.path)
        try:
            rows = conn.execute(f"SELECT {_SERIES_COLUMNS} FROM series").fetchall()
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
