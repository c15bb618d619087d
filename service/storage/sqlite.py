"""The embedded backend: one SQLite file in the data dir (the default).

WAL mode with ``synchronous=FULL``: a commit returns once the WAL is synced. The
committer's connection never checkpoints; a background thread does, so commits only
ever sync the WAL. Readers use one connection per thread (WAL readers never block).
One server per data dir (`service.main` locks it), so fencing here guards against a
stale `Committer` in the same process; it is the same code path as PostgreSQL's.
Chunks are found through an in-memory directory rather than an index
(`service.storage.chunk_directory`).
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
from .base import DEFAULT_SHARDS, Reader, Storage, WriteSession
from .chunk_directory import NEWEST_ROW, ChunkDirectory, Pending
from .chunks import StoredChunk, encode_keys, encode_values
from .connections import ConnectionPerThread
from .records import SeriesRecord, record_from_columns
from .sqlite_schema import PAGE_SIZE, create_or_migrate

log = logging.getLogger("episodic_koopman.service")

#: A series' state columns from its newest chunk, by ``cid`` (see `SqliteStorage.load_records`).
_NEWEST_STATE = (
    "SELECT sid, start + n, t_last, tz, step, coalesce(run, 0) FROM chunks WHERE cid IN "
)
_SERIES = "SELECT sid, id, incarnation, params, channels, time_kind, created_at FROM series"

#: Seconds between background WAL checkpoints. A checkpoint copies every page changed
#: since the last one into the database file: rarer ones copy each hot page once for
#: many commits (the WAL grows meanwhile: about a kilobyte per push).
CHECKPOINT_SECONDS = 30.0


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    """A connection with the durability settings (WAL, synchronous=FULL)."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA busy_timeout = 30000")
    if not readonly:
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # before WAL mode: a new file takes it
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def _usable(conn: sqlite3.Connection) -> bool:
    """Whether a reader's connection can serve another read: open, and not left inside a
    transaction by a failure (its reads would keep seeing that transaction's snapshot)."""
    try:
        return not conn.in_transaction
    except sqlite3.ProgrammingError:  # closed
        return False


class SqliteReader(Reader):
    """Read-only queries from any thread (one connection per thread)."""

    def __init__(self, path: Path, directory: ChunkDirectory) -> None:
        self.path = path
        self.directory = directory
        self._conns = ConnectionPerThread(lambda: connect(path, readonly=True), _usable)

    def fetch_chunks(
        self, sid: int, seq: int, max_chunks: int, values: bool = True
    ) -> list[StoredChunk]:
        conn = self._conns.get()
        cids, tail = self.directory.locate_as_of(sid, seq, max_chunks)
        if cids:
            # One statement: the chunks, and the table's newest row in the same snapshot.
            # Still the directory's newest: no other handle has written since it answered.
            rows = conn.execute(
                f"SELECT start, n, t_first, t_last, t, {_y(values)}, newest.cid, newest.sid "
                f"FROM chunks, {NEWEST_ROW} AS newest "
                f"WHERE chunks.cid IN ({_marks(cids)}) AND chunks.sid = ? ORDER BY chunks.cid",
                [*cids, sid],
            ).fetchall()
            if rows and tuple(rows[0][6:]) == tail:
                return [StoredChunk(*row[:6]) for row in rows]
        self.directory.sync(conn)  # another handle on the file may have written
        return _fetch(conn, sid, self.directory.locate(sid, seq, max_chunks), values)

    def close(self) -> None:
        self._conns.close()


class SqliteSession(WriteSession):
    """The committer's connection, plus the thread that checkpoints the WAL."""

    errors = (sqlite3.Error,)

    def __init__(self, path: Path, directory: ChunkDirectory) -> None:
        self.path = path
        self.pending = Pending(directory)
        self._data_version: int | None = None  # changes when another connection commits
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
        self.pending.clear()
        try:
            (version,) = self._conn.execute("PRAGMA data_version").fetchone()
            if version != self._data_version:  # others committed: the directory catches up
                self.pending.directory.refresh(self._conn)  # (with only what they changed)
                self._data_version = version
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def commit(self) -> None:
        self._conn.execute("COMMIT")
        self.pending.publish()  # before the committer acknowledges anything

    def rollback(self) -> None:
        self.pending.clear()
        # A COMMIT that raised may still have landed, and data_version only moves on other
        # connections' commits: re-read the directory at the next begin, or a stale one
        # would let the next push reuse a seq.
        self._data_version = None
        self._conn.execute("ROLLBACK")

    def savepoint(self) -> None:
        self._conn.execute("SAVEPOINT command")
        self.pending.mark()

    def rollback_savepoint(self) -> None:
        self.pending.rollback_to_mark()
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
        cids = self.pending.locate(sid, 0, 2**62)
        for at in range(0, len(cids), _BATCH):  # by cid: there is no index on sid
            part = cids[at : at + _BATCH]
            self._conn.execute(f"DELETE FROM chunks WHERE cid IN ({_marks(part)})", part)
        self._conn.execute("DELETE FROM series WHERE sid = ?", (sid,))
        self.pending.drop(sid)

    def fetch_chunks(
        self, sid: int, seq: int, max_chunks: int, values: bool = True
    ) -> list[StoredChunk]:
        return _fetch(self._conn, sid, self.pending.locate(sid, seq, max_chunks), values)

    def insert_chunk(
        self,
        sid: int,
        start: int,
        keys: list[TimeKey],
        values: np.ndarray,
        state: SeriesRecord | None,
    ) -> None:
        # Refuses keys that do not increase before anything is written; even keys are left out.
        t = encode_keys(keys, leave_out_even=True)
        self.pending.check_extends(sid, start, keys[0], keys[-1])
        cursor = self._conn.execute(
            "INSERT INTO chunks (sid, start, n, t_first, t_last, t, y, tz, step, run) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                sid,
                start,
                len(keys),
                keys[0],
                keys[-1],
                t,
                encode_values(values),
                None if state is None else state.tz,
                None if state is None else state.spacing.step,
                None if state is None else state.spacing.run,
            ),
        )
        assert cursor.lastrowid is not None
        self.pending.add(cursor.lastrowid, sid, start, len(keys), keys[-1])

    def set_layout(self, record: SeriesRecord) -> None:
        self._conn.execute(
            "UPDATE series SET channels = ?, time_kind = ? WHERE sid = ?",
            (
                None if record.channels is None else json.dumps(list(record.channels)),
                record.time_kind,
                record.sid,
            ),
        )


#: Rows read or deleted by ``cid`` per statement at most (under SQLite's variable limit).
_BATCH = 500


def _marks(items: list) -> str:
    return ",".join("?" * len(items))


def _y(values: bool) -> str:
    """The value column, or an empty blob in its place (a fetch without values)."""
    return "y" if values else "x''"


def _fetch(conn: sqlite3.Connection, sid: int, cids: list[int], values: bool) -> list[StoredChunk]:
    """The chunks with these ``cid``s (consecutive chunks of ``sid``), in order."""
    if not cids:
        return []
    rows = conn.execute(
        f"SELECT start, n, t_first, t_last, t, {_y(values)} FROM chunks "
        f"WHERE cid IN ({_marks(cids)}) AND sid = ? ORDER BY cid",
        [*cids, sid],
    ).fetchall()
    return [StoredChunk(*row) for row in rows]


class SqliteStorage(Storage):
    """Series and observations in one SQLite file."""

    embedded = True

    def __init__(self, path: Path) -> None:
        self.path = path
        self._n_shards: int | None = None
        self._directory: ChunkDirectory | None = None
        self._directory_lock = threading.Lock()

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
                create_or_migrate(conn, old, meta, str(self.path))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._n_shards = int(meta.get("shards", DEFAULT_SHARDS))
        finally:
            conn.close()

    def directory(self) -> ChunkDirectory:
        """The chunk directory, empty until its first catch-up: `load_records`, or the first
        read or write, whichever comes first (each catches up before relying on it)."""
        with self._directory_lock:
            if self._directory is None:
                self._directory = ChunkDirectory()
            return self._directory

    def load_records(self) -> dict[str, SeriesRecord]:
        directory = self.directory()
        conn = connect(self.path, readonly=True)
        try:
            conn.execute("BEGIN")  # one snapshot for the directory's catch-up and the rows
            newest = list(directory.refresh_newest(conn).values())
            series = conn.execute(_SERIES).fetchall()
            state: dict[int, tuple] = {}
            for at in range(0, len(newest), _BATCH):
                part = newest[at : at + _BATCH]
                rows = conn.execute(_NEWEST_STATE + f"({_marks(part)})", part)
                state.update((row[0], row[1:]) for row in rows)
            conn.execute("COMMIT")
        finally:
            conn.close()
        empty = (0, None, None, None, 0)
        return {
            id_: record_from_columns(
                sid, id_, incarnation, params, channels, kind, *state.get(sid, empty), created
            )
            for sid, id_, incarnation, params, channels, kind, created in series
        }

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
        return SqliteReader(self.path, self.directory())

    def writer(self) -> SqliteSession:
        return SqliteSession(self.path, self.directory())
