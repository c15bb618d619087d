"""Durable storage: SQLite in the data dir, and the committer that owns every write.

Observations are the source of truth. The ``observations`` table is append-only
(rows are removed only with their series), the database runs in WAL mode with
``synchronous=FULL``, and a push is acknowledged only after its transaction has
committed. Model snapshots are an optimisation on top (see `service.snapshots`).

All writes go through one `Committer` thread, which gives:

* one writer per series (in fact one writer, full stop), so concurrent pushes to
  the same series are serialised and none is lost;
* group commit: every command queued while the previous commit was syncing is
  applied in one transaction (each in its own savepoint, so a rejected push does
  not affect the others), which amortises the ``fsync`` over many requests;
* idempotency on ``(series, t)``, decided against the committed state: an
  identical re-send is a duplicate, the same ``t`` with another ``y`` and a ``t``
  older than the series' last one (and never stored) are 409s.

Once a transaction commits, the committer publishes its effects to the model
registry (new records, observation chunks to apply) and only then resolves the
requests' futures, so an acknowledged observation is always visible to reads.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from episodic_koopman import EpisodicKoopman
from episodic_koopman.forecaster import MAX_FEATURES

from .errors import ApiError, invalid
from .ingest import ParsedBatch
from .timestamps import Spacing, TimeKey, render_t, same_gap

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
"""

#: Commands folded into one transaction at most.
MAX_GROUP = 512
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


def initialise(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = connect(path)
    try:
        conn.executescript(_SCHEMA)
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
        elif int(row[0]) > SCHEMA_VERSION:
            raise RuntimeError(
                f"{path} has schema version {row[0]}; this server reads up to {SCHEMA_VERSION}"
            )
    finally:
        conn.close()


@dataclass(frozen=True, slots=True)
class SeriesRecord:
    """The committed state of one series (immutable: each commit publishes a new one)."""

    sid: int
    id: str
    incarnation: str
    params: dict[str, Any]
    channels: tuple[str, ...] | None
    time_kind: str | None
    count: int
    last_key: TimeKey | None
    tz: int | None
    spacing: Spacing
    created_at: float

    @property
    def last_t(self) -> str | float | None:
        if self.last_key is None or self.time_kind is None:
            return None
        return render_t(self.time_kind, self.last_key, self.tz)

    @property
    def n_channels(self) -> int:
        return 1 if self.channels is None else len(self.channels)

    def spacing_value(self) -> float | None:
        """The regular step in seconds (ISO) or time units (numbers), if regular."""
        if not self.spacing.regular(self.count) or self.spacing.step is None:
            return None
        step = self.spacing.step
        return step / 1e6 if self.time_kind == "iso" else float(step)


def _record_from_row(row: sqlite3.Row | tuple) -> SeriesRecord:
    sid, sid_text, incarnation, params, channels, kind, count, last_key, tz, step, run, created = (
        row
    )
    return SeriesRecord(
        sid=sid,
        id=sid_text,
        incarnation=incarnation,
        params=json.loads(params),
        channels=tuple(json.loads(channels)) if channels is not None else None,
        time_kind=kind,
        count=count,
        last_key=last_key,
        tz=tz,
        spacing=Spacing(step, run),
        created_at=created,
    )


_SERIES_COLUMNS = (
    "sid, id, incarnation, params, channels, time_kind, count, last_key, tz, step, run, created_at"
)


def load_records(path: Path) -> dict[str, SeriesRecord]:
    conn = connect(path)
    try:
        rows = conn.execute(f"SELECT {_SERIES_COLUMNS} FROM series").fetchall()
    finally:
        conn.close()
    return {row[1]: _record_from_row(row) for row in rows}


class Reader:
    """Read-only queries from any thread (one connection per thread; WAL readers never block)."""

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

    def observation_blocks(
        self, sid: int, start: int, block: int = 8192
    ) -> Iterator[tuple[np.ndarray, list[Any]]]:
        """Values ``(n, c)`` and time keys of observations ``seq >= start``, in blocks, in order."""
        conn = self._conn()
        while True:
            rows = conn.execute(
                "SELECT seq, t_key, y FROM observations WHERE sid = ? AND seq >= ? "
                "ORDER BY seq LIMIT ?",
                (sid, start, block),
            ).fetchall()
            if not rows:
                return
            if rows[0][0] != start or rows[-1][0] != start + len(rows) - 1:
                raise RuntimeError(f"observations of series {sid} are not contiguous at {start}")
            values = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float64)
            yield values.reshape(len(rows), -1), [r[1] for r in rows]
            start += len(rows)

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


# ------------------------------------------------------------------ commands
@dataclass
class Ingest:
    series_id: str
    batch: ParsedBatch


@dataclass
class Configure:
    series_id: str
    params: dict[str, Any]


@dataclass
class Delete:
    series_id: str


@dataclass
class IngestOutcome:
    accepted: int
    duplicates: int
    record: SeriesRecord


@dataclass
class ConfigureOutcome:
    record: SeriesRecord
    created: bool
    changed: bool


@dataclass
class Chunk:
    """Committed observations ``start .. start + len(values) - 1`` of a series, to apply."""

    start: int
    values: np.ndarray  # (n, c) float64
    keys: list[TimeKey]
    committed_at: float = field(default_factory=time.monotonic)  # bounds the models' lag

    @property
    def end(self) -> int:
        return self.start + self.values.shape[0]


class Publisher(Protocol):
    """Receives the effects of committed transactions (the model registry)."""

    def publish(self, effects: list[Effect]) -> None: ...


@dataclass
class Effect:
    kind: str  # "upsert" | "delete" | "append"
    series_id: str
    record: SeriesRecord | None = None
    chunk: Chunk | None = None


@dataclass
class _Queued:
    command: Ingest | Configure | Delete
    future: Future
    effects: list[Effect] = field(default_factory=list)


_STOP = object()


def full_params(given: dict[str, Any]) -> dict[str, Any]:
    """Every constructor parameter with defaults filled in (the library validates them).

    Storing all of them freezes a series' configuration: a later change of the
    library's defaults cannot make replay diverge from what was acknowledged.
    """
    try:
        model = EpisodicKoopman.from_flat(given)
    except (TypeError, ValueError) as exc:
        message = str(exc)
        name = next(
            (p for p in sorted(given, key=len, reverse=True) if message.startswith(p)), None
        )
        loc = ["body", "params", name] if name else ["body", "params"]
        raise invalid(loc, message) from None
    return json.loads(json.dumps(model.to_flat()))


def canonical_params(params: dict[str, Any]) -> dict[str, Any]:
    """Stored flat parameters as this library writes them (old names and aliases mapped).

    A series stored by an older version may say ``missing="raise"``; the model it
    describes is the same one.
    """
    return json.loads(json.dumps(EpisodicKoopman.from_flat(params).to_flat()))


def check_layout(params: dict[str, Any], first: float | dict[str, float]) -> None:
    """Reject a channel count the model cannot hold (before anything is stored)."""
    n_channels = len(first) if isinstance(first, dict) else 1
    n_features = params["delays"] * n_channels
    if params["lifting"] == "rff":
        n_features += params["n_components"]
    if n_features > MAX_FEATURES:
        raise invalid(
            ["body", "observations", 0, "y"],
            f"delays x channels (+ lifted features) = {n_features} exceeds {MAX_FEATURES}",
        )


class Committer:
    """The single writer: a thread that applies queued commands in group commits."""

    def __init__(
        self,
        path: Path,
        records: dict[str, SeriesRecord],
        publisher: Publisher,
        max_series: int,
        model_defaults: dict[str, Any] | None = None,
    ) -> None:
        self.path = path
        self.model_defaults = dict(model_defaults or {})
        self.records = dict(records)  # committer-thread state: the committed records
        self.publisher = publisher
        self.max_series = max_series
        self._queue: queue.SimpleQueue[_Queued | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="committer", daemon=True)
        self._conn = connect(path)
        # Checkpoints (copying the WAL into the database) run in their own thread, so that
        # commits only ever sync the WAL.
        self._conn.execute("PRAGMA wal_autocheckpoint = 0")
        self._checkpointer = threading.Thread(
            target=self._checkpoint, name="checkpoint", daemon=True
        )
        self._stopping = threading.Event()
        self.commits = 0
        self.failed = False

    def start(self) -> None:
        self._thread.start()
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

    def submit(self, command: Ingest | Configure | Delete) -> Future:
        future: Future = Future()
        if self.failed or not self._thread.is_alive():
            future.set_exception(ApiError(503, "storage is unavailable"))
        else:
            self._queue.put(_Queued(command, future))
        return future

    def stop(self) -> None:
        """Finish every queued command, then stop."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        self._stopping.set()
        if self._checkpointer.is_alive():
            self._checkpointer.join()
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            log.exception("final WAL checkpoint failed (the WAL is replayed at the next start)")
        self._conn.close()

    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive() and not self.failed

    # -- the thread ------------------------------------------------------------------
    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            group: list[_Queued] = []
            item: _Queued | object = first
            while True:
                if item is _STOP:
                    stopping = True
                else:
                    assert isinstance(item, _Queued)
                    group.append(item)
                if len(group) >= MAX_GROUP:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if group:
                self._commit(group)

    def _commit(self, group: list[_Queued]) -> None:
        work: dict[str, SeriesRecord | None] = {}
        outcomes: list[tuple[_Queued, Any, BaseException | None]] = []
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            for queued in group:
                conn.execute("SAVEPOINT command")
                try:
                    result = self._apply(queued, work)
                except BaseException as exc:
                    conn.execute("ROLLBACK TO command")
                    conn.execute("RELEASE command")
                    queued.effects.clear()
                    if not isinstance(exc, ApiError):
                        log.exception("command failed: %r", queued.command)
                        exc = ApiError(500, "internal error while storing")
                    outcomes.append((queued, None, exc))
                else:
                    conn.execute("RELEASE command")
                    outcomes.append((queued, result, None))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            log.exception("commit failed; %d commands are rejected", len(group))
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            for queued in group:
                if not queued.future.done():
                    queued.future.set_exception(ApiError(503, f"storage error: {exc}"))
            # The in-memory records were never touched (``work`` is dropped), so they
            # still describe the database.
            return
        self.commits += 1
        for series_id, record in work.items():
            if record is None:
                self.records.pop(series_id, None)
            else:
                self.records[series_id] = record
        effects = [
            effect for queued, _, error in outcomes if error is None for effect in queued.effects
        ]
        try:
            self.publisher.publish(effects)
        finally:
            for queued, result, error in outcomes:
                if error is not None:
                    queued.future.set_exception(error)
                else:
                    queued.future.set_result(result)

    # -- commands (inside the transaction; ``work`` holds this group's new records) ------
    def _current(self, series_id: str, work: dict[str, SeriesRecord | None]) -> SeriesRecord | None:
        if series_id in work:
            return work[series_id]
        return self.records.get(series_id)

    def _n_series(self, work: dict[str, SeriesRecord | None]) -> int:
        n = len(self.records)
        for series_id, record in work.items():
            if record is None and series_id in self.records:
                n -= 1
            elif record is not None and series_id not in self.records:
                n += 1
        return n

    def _apply(self, queued: _Queued, work: dict[str, SeriesRecord | None]) -> Any:
        command = queued.command
        if isinstance(command, Ingest):
            return self._ingest(command, work, queued.effects)
        if isinstance(command, Configure):
            return self._configure(command, work, queued.effects)
        return self._delete(command, work, queued.effects)

    def _create(self, series_id: str, params: dict[str, Any], work) -> SeriesRecord:
        if self._n_series(work) >= self.max_series:
            raise ApiError(
                403,
                f"the server holds its maximum of {self.max_series} series "
                "(EPISODIC_KOOPMAN_MAX_SERIES); delete one first",
            )
        created_at = time.time()
        incarnation = uuid.uuid4().hex
        cursor = self._conn.execute(
            "INSERT INTO series (id, incarnation, params, created_at) VALUES (?, ?, ?, ?)",
            (series_id, incarnation, json.dumps(params), created_at),
        )
        assert cursor.lastrowid is not None
        return SeriesRecord(
            sid=cursor.lastrowid,
            id=series_id,
            incarnation=incarnation,
            params=params,
            channels=None,
            time_kind=None,
            count=0,
            last_key=None,
            tz=None,
            spacing=Spacing(),
            created_at=created_at,
        )

    def _configure(self, command: Configure, work, effects: list[Effect]) -> ConfigureOutcome:
        params = full_params({**self.model_defaults, **command.params})
        record = self._current(command.series_id, work)
        if record is None:
            record = self._create(command.series_id, params, work)
            work[command.series_id] = record
            effects.append(Effect("upsert", record.id, record))
            return ConfigureOutcome(record, created=True, changed=True)
        if canonical_params(record.params) == params:
            return ConfigureOutcome(record, created=False, changed=False)
        if record.count:
            first = 1.0 if record.channels is None else dict.fromkeys(record.channels, 1.0)
            try:
                check_layout(params, first)
            except ApiError:
                raise invalid(
                    ["body", "params"],
                    f"these parameters cannot hold the series' {record.n_channels} channels",
                ) from None
        # A new incarnation: the registry rebuilds the model by replaying every observation.
        record = replace(record, params=params, incarnation=uuid.uuid4().hex)
        self._conn.execute(
            "UPDATE series SET params = ?, incarnation = ? WHERE sid = ?",
            (json.dumps(params), record.incarnation, record.sid),
        )
        work[command.series_id] = record
        effects.append(Effect("upsert", record.id, record))
        return ConfigureOutcome(record, created=False, changed=True)

    def _delete(self, command: Delete, work, effects: list[Effect]) -> bool:
        record = self._current(command.series_id, work)
        if record is None:
            return False
        self._conn.execute("DELETE FROM observations WHERE sid = ?", (record.sid,))
        self._conn.execute("DELETE FROM series WHERE sid = ?", (record.sid,))
        work[command.series_id] = None
        effects.append(Effect("delete", record.id, record))
        return True

    def _ingest(self, command: Ingest, work, effects: list[Effect]) -> IngestOutcome:
        batch = command.batch
        record = self._current(command.series_id, work)
        created = record is None
        if record is None:
            params = full_params(dict(self.model_defaults))
            check_layout(params, batch.values[0])
            record = self._create(command.series_id, params, work)
        kind = batch.stamps[0].kind
        if record.time_kind is not None and kind != record.time_kind:
            raise invalid(
                ["body", "observations", 0, "t"],
                f"this series uses {record.time_kind} timestamps, got {kind}",
            )
        values = self._values(record, batch)
        channels = record.channels
        if record.count == 0 and isinstance(batch.values[0], dict):
            channels = tuple(batch.values[0])

        # Walk the batch in order against the committed state: new, duplicate or conflict.
        last, tz = record.last_key, record.tz
        step, run = record.spacing.step, record.spacing.run
        new_rows: list[int] = []
        new_keys: dict[TimeKey, int] = {}
        duplicates = 0
        stored_rows: dict[TimeKey, bytes] | None = None
        for i, stamp in enumerate(batch.stamps):
            key = stamp.key
            if last is None or key > last:
                if last is not None:  # the spacing, inline (this loop is the ingest hot path)
                    gap = key - last
                    if step is not None and same_gap(gap, step):
                        run += 1
                    else:
                        step, run = gap, 1
                last, tz = key, stamp.tz
                new_keys[key] = len(new_rows)
                new_rows.append(i)
                continue
            where = f"observations[{i}]"
            shown = render_t(kind, key, stamp.tz)
            if key in new_keys:
                stored = values[new_rows[new_keys[key]]]
            else:
                committed = record.last_key
                if stored_rows is None and committed is not None and key <= committed:
                    # One range query for every re-sent t of this request (retries re-send runs).
                    old = [s.key for s in batch.stamps if s.key <= committed]
                    stored_rows = dict(
                        self._conn.execute(
                            "SELECT t_key, y FROM observations "
                            "WHERE sid = ? AND t_key >= ? AND t_key <= ?",
                            (record.sid, min(old), max(old)),
                        ).fetchall()
                    )
                row = stored_rows.get(key) if stored_rows is not None else None
                if row is None:
                    raise ApiError(
                        409,
                        f"{where}: t={shown} is older than the series' last t="
                        f"{render_t(kind, last, tz)} and was never stored; "
                        "observations must arrive in time order",
                    )
                stored = np.frombuffer(row, dtype=np.float64)
            if not np.array_equal(stored, values[i]):
                raise ApiError(409, f"{where}: t={shown} is already stored with a different y")
            duplicates += 1

        spacing = Spacing(step, run)
        if new_rows:
            start = record.count
            accepted = values if len(new_rows) == len(values) else values[new_rows]
            blob, width = accepted.tobytes(), 8 * accepted.shape[1]
            stamps, sid = batch.stamps, record.sid
            self._conn.executemany(
                "INSERT INTO observations (sid, seq, t_key, y) VALUES (?, ?, ?, ?)",
                [
                    (sid, start + j, stamps[i].key, blob[j * width : (j + 1) * width])
                    for j, i in enumerate(new_rows)
                ],
            )
            record = replace(
                record,
                channels=channels,
                time_kind=kind,
                count=start + len(new_rows),
                last_key=last,
                tz=tz,
                spacing=spacing,
            )
            self._conn.execute(
                "UPDATE series SET channels = ?, time_kind = ?, count = ?, last_key = ?, tz = ?, "
                "step = ?, run = ? WHERE sid = ?",
                (
                    None if channels is None else json.dumps(list(channels)),
                    kind,
                    record.count,
                    last,
                    tz,
                    spacing.step,
                    spacing.run,
                    record.sid,
                ),
            )
            effects.append(Effect("upsert", record.id, record))
            keys = [batch.stamps[i].key for i in new_rows]
            effects.append(Effect("append", record.id, record, Chunk(start, accepted, keys)))
        elif created:
            effects.append(Effect("upsert", record.id, record))
        work[command.series_id] = record
        return IngestOutcome(len(new_rows), duplicates, record)

    def _values(self, record: SeriesRecord, batch: ParsedBatch) -> np.ndarray:
        """The batch as ``(n, c)`` float64 in the series' channel order (422 on a mismatch)."""
        first = batch.values[0]
        is_dict = isinstance(first, dict)
        if record.count and (record.channels is not None) != is_dict:
            expected = "a number" if record.channels is None else f"a dict of {record.channels}"
            raise invalid(["body", "observations", 0, "y"], f"this series takes {expected}")
        if not is_dict:
            return np.array(batch.values, dtype=np.float64).reshape(-1, 1)
        if record.count == 0 and record.channels is None:
            check_layout(record.params, first)
        channels = record.channels if record.count else tuple(first)
        wanted = set(channels)
        rows = np.empty((len(batch), len(channels)), dtype=np.float64)
        for i, value in enumerate(batch.values):
            if value.keys() != wanted:
                missing = sorted(wanted - value.keys())
                extra = sorted(value.keys() - wanted)
                raise invalid(
                    ["body", "observations", i, "y"],
                    f"channels differ from the series' {list(channels)}: "
                    f"missing {missing}, extra {extra}",
                )
            rows[i] = [value[name] for name in channels]
        return rows
