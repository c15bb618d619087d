"""SQLite schema 3: chunks without an index on (sid, start), found through the chunk
directory (service/storage/chunk_directory.py). A schema-2 database migrates; another
handle's commits are caught up with before a writer checks an append or a reader reads.
"""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from storage_helpers import Recorder, append_raw, numeric, push, stored, timed

from service.storage import Committer, SqliteStorage
from service.storage import sqlite as sqlite_backend
from service.storage.chunk_directory import ChunkDirectory, Pending, SeriesChunks
from service.storage.chunks import StoredChunk, encode_keys
from service.storage.records import Delete
from service.storage.sqlite_schema import SCHEMA_VERSION

# Schema 2's chunks index and trigger, as schema 2 created them (the rest is unchanged).
_SQLITE_V2_EXTRAS = """
CREATE UNIQUE INDEX chunks_series ON chunks (sid, start);
CREATE TRIGGER chunks_extend BEFORE INSERT ON chunks
WHEN NEW.start IS NOT coalesce(
        (SELECT start + n FROM chunks WHERE sid = NEW.sid ORDER BY start DESC LIMIT 1), 0)
    OR NEW.t_first <= (SELECT t_last FROM chunks WHERE sid = NEW.sid ORDER BY start DESC LIMIT 1)
    OR NEW.t_last < NEW.t_first
BEGIN SELECT RAISE(ABORT, 'a chunk must extend its series (next seq, later t)'); END;
"""


def _open(path) -> SqliteStorage:
    storage = SqliteStorage(path)
    storage.initialise()
    return storage


def _committer(storage: SqliteStorage) -> Committer:
    committer = Committer(
        storage.writer(),
        storage.load_records(),
        Recorder(storage),
        100,
        epochs=storage.acquire_shards("test"),
        n_shards=storage.n_shards,
    )
    committer.start()
    return committer


def _stop(committer: Committer) -> None:
    committer.stop()
    committer.publisher.close()  # type: ignore[attr-defined]


def _objects(path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}


def test_schema_2_migrates_to_3_without_the_index_and_keeps_everything(tmp_path):
    path = tmp_path / "observations.sqlite3"
    storage = _open(path)
    committer = _committer(storage)
    try:
        for start in range(0, 30, 3):  # interleaved pushes: chunks of a and b alternate
            push(committer, "a", numeric([float(start + i) for i in range(3)], start))
            push(committer, "b", numeric([-float(start + i) for i in range(3)], start))
        push(committer, "c", numeric([1.0]))
    finally:
        _stop(committer)
    with sqlite3.connect(path) as conn:  # make it schema 2 as schema 2 wrote it
        conn.executescript(_SQLITE_V2_EXTRAS)
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    assert "chunks_series" in _objects(path)

    migrated = _open(path)
    assert not {"chunks_series", "chunks_extend"} & _objects(path)
    assert "chunks_append_only" in _objects(path)
    with sqlite3.connect(path) as conn:
        (version,) = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    assert version == str(SCHEMA_VERSION)
    records = migrated.load_records()
    assert {k: r.count for k, r in records.items()} == {"a": 30, "b": 30, "c": 1}
    assert stored(migrated, "a") == [(i, float(i), [float(i)]) for i in range(30)]
    assert stored(migrated, "b") == [(i, float(i), [-float(i)]) for i in range(30)]
    reader = migrated.reader()
    try:
        assert reader.times(records["b"].sid, [0, 14, 29, 30]) == {0: 0.0, 14: 14.0, 29: 29.0}
    finally:
        reader.close()
    committer = _committer(migrated)
    try:
        again = push(committer, "a", timed([(10, 10.0), (11, 11.0), (30, 30.0)]))  # re-sent, new
        assert (again.accepted, again.duplicates, again.record.count) == (1, 2, 31)
    finally:
        _stop(committer)
    assert _open(path).load_records()["a"].count == 31  # and it reopens as it is now


def test_a_stale_handle_catches_up_before_it_checks_an_append_or_reads(tmp_path):
    """Two handles on one file: each one's directory sees what the other committed."""
    path = tmp_path / "observations.sqlite3"
    first, second = _open(path), _open(path)
    committer = _committer(first)
    try:
        push(committer, "s", numeric([1.0, 2.0]))
        push(committer, "gone", numeric([5.0]))
        assert second.load_records()["s"].count == 2  # builds second's directory now
        push(committer, "s", numeric([3.0], 2))  # second's directory does not know this one
        assert committer.submit(Delete("gone")).result(timeout=60) is True
    finally:
        _stop(committer)
    sid = second.load_records()["s"].sid
    session = second.writer()
    try:
        session.begin()
        with pytest.raises(sqlite3.IntegrityError, match="extend its series"):
            append_raw(session, sid, 2, [9.0])  # seq 2 is taken (by the first handle)
        session.rollback()
        session.begin()
        append_raw(session, sid, 3, [9.0])
        session.commit()
    finally:
        session.close()
    assert [y for _, _, y in stored(second, "s")] == [[1.0], [2.0], [3.0], [0.0]]
    assert [y for _, _, y in stored(first, "s")] == [[1.0], [2.0], [3.0], [0.0]]
    assert set(first.load_records()) == set(second.load_records()) == {"s"}


def test_a_reader_fetches_in_one_statement_and_still_sees_another_handles_chunks(
    tmp_path, monkeypatch
):
    """The newest row comes with the chunks: a catch-up only when another handle wrote."""
    path = tmp_path / "observations.sqlite3"
    storage = _open(path)
    committer = _committer(storage)
    try:
        push(committer, "s", numeric([1.0, 2.0]))
        push(committer, "s", numeric([3.0], 2))
    finally:
        _stop(committer)
    sid = storage.load_records()["s"].sid
    statements: list[str] = []
    real_connect = sqlite_backend.connect

    def traced(path, readonly=False):
        conn = real_connect(path, readonly)
        conn.set_trace_callback(statements.append)  # after the connection's own PRAGMAs
        return conn

    monkeypatch.setattr(sqlite_backend, "connect", traced)
    reader = storage.reader()
    try:
        assert [(c.start, c.n) for c in reader.fetch_chunks(sid, 0, 10)] == [(0, 2), (2, 1)]
        assert [(c.start, c.n) for c in reader.fetch_chunks(sid, 2, 1)] == [(2, 1)]
        assert len(statements) == 2  # one per fetch
        other = _open(path).writer()  # another handle appends to the series
        try:
            other.begin()
            append_raw(other, sid, 3, [7.0, 8.0])
            other.commit()
        finally:
            other.close()
        statements.clear()
        assert [(c.start, c.n) for c in reader.fetch_chunks(sid, 2, 10)] == [(2, 1), (3, 2)]
        assert len(statements) > 1  # it caught up first
        assert reader.times(sid, [4]) == {4: 8.0}
    finally:
        reader.close()


def test_a_writers_view_locates_as_one_directory_of_every_chunk_would():
    """`Pending.locate` answers over committed chunks and the transaction's own, in order."""
    directory = ChunkDirectory()
    committed = [(cid, 1, 10 * (cid - 1), 10, 10.0 * cid - 1) for cid in range(1, 6)]
    committed.append((6, 3, 0, 4, 3.0))  # a series with committed chunks only
    directory.publish(committed, set())
    pending = Pending(directory)
    added = [(7, 1, 50, 10, 59.0), (8, 2, 0, 5, 4.0), (9, 1, 60, 3, 62.0), (10, 1, 63, 1, 63.0)]
    added.append((11, 2, 5, 5, 9.0))  # a series with this transaction's chunks only
    for row in added:
        pending.add(*row)
    for sid in (1, 2, 3):
        everything = SeriesChunks()
        for cid, owner, start, n, t_last in committed + added:
            if owner == sid:
                everything.add(cid, start, n, t_last)
        for seq in range(-1, 70):
            for max_chunks in (1, 2, 3, 6, 100):
                want = everything.locate(seq, max_chunks)
                assert pending.locate(sid, seq, max_chunks) == want, (sid, seq, max_chunks)
    assert directory.locate(1, 0, 100) == [1, 2, 3, 4, 5]  # the committed view is untouched
    pending.drop(1)
    assert pending.locate(1, 0, 100) == []


class _ReferencePending:
    """`Pending` the straightforward way: every answer from a scan of the whole group."""

    def __init__(self, committed: list[tuple]) -> None:
        self.directory = ChunkDirectory()
        self.directory.publish(committed, set())
        self.committed = committed
        self.added: list[tuple] = []
        self.dropped: set[int] = set()
        self.saved: tuple[int, set[int]] = (0, set())

    def mark(self) -> None:
        self.saved = (len(self.added), set(self.dropped))

    def rollback_to_mark(self) -> None:
        del self.added[self.saved[0] :]
        self.dropped = set(self.saved[1])

    def head(self, sid: int) -> tuple:
        mine = [row for row in self.added if row[1] == sid]
        if sid in self.dropped:
            return 0, None
        if mine:
            return mine[-1][2] + mine[-1][3], mine[-1][4]
        return self.directory.head(sid)

    def locate(self, sid: int, seq: int, max_chunks: int) -> list[int]:
        if sid in self.dropped:
            return []
        everything = SeriesChunks()
        for cid, owner, start, n, t_last in self.committed + self.added:
            if owner == sid:
                everything.add(cid, start, n, t_last)
        return everything.locate(seq, max_chunks)


@pytest.mark.parametrize("seed", range(20))
def test_a_writers_view_answers_as_a_scan_of_the_whole_group_would(seed):
    """Random groups of adds, drops, marks and rollbacks: `Pending` (indexed per series)
    and the reference (scans) agree on every head and lookup, and publish the same."""
    rng = np.random.default_rng(seed)
    committed = []
    for cid in range(1, 1 + int(rng.integers(0, 30))):
        sid = int(rng.integers(1, 5))
        end = sum(n for _, owner, _, n, _ in committed if owner == sid)
        committed.append((cid, sid, end, int(rng.integers(1, 4)), float(cid)))
    directory = ChunkDirectory()
    directory.publish(committed, set())
    pending, reference = Pending(directory), _ReferencePending(committed)
    cid = len(committed)
    for _ in range(200):
        sid = int(rng.integers(1, 8))
        action = rng.choice(["add", "add", "add", "drop", "mark", "rollback", "locate"])
        if action == "add" and sid not in reference.dropped:
            cid += 1
            end, _ = reference.head(sid)
            pending.add(cid, sid, end, int(rng.integers(1, 4)), float(cid))
            reference.added.append(pending.added[-1])
        elif action == "drop":
            pending.drop(sid)
            reference.dropped.add(sid)
        elif action == "mark":
            pending.mark()
            reference.mark()
        elif action == "rollback":
            pending.rollback_to_mark()
            reference.rollback_to_mark()
        for probe in range(1, 8):
            assert pending.head(probe) == reference.head(probe), (seed, probe)
            for seq in (-1, 0, 1, 3, 7, 20, 60, 10**6):
                for max_chunks in (0, 1, 2, 5, 1000):
                    want = reference.locate(probe, seq, max_chunks)
                    assert pending.locate(probe, seq, max_chunks) == want, (probe, seq)
    assert (pending.added, pending.dropped) == (reference.added, reference.dropped)
    pending.publish()
    reference.directory.publish(reference.added, reference.dropped)
    for probe in range(1, 8):
        assert directory.locate(probe, 0, 1000) == reference.directory.locate(probe, 0, 1000)
        assert directory.head(probe) == reference.directory.head(probe)


def _store_two_observations(path) -> None:
    """Series ``s`` with 1.0 and 2.0 at t = 0, 1, in a database no handle holds open."""
    committer = _committer(_open(path))
    try:
        push(committer, "s", numeric([1.0, 2.0]))
    finally:
        _stop(committer)


class _Rows(list):
    def fetchone(self):
        return self[0] if self else None

    def fetchall(self):
        return list(self)


class _CountingConnection:
    """A connection that counts the rows its statements return (into ``count[0]``)."""

    def __init__(self, conn: sqlite3.Connection, count: list[int]) -> None:
        self.conn, self.count = conn, count

    def execute(self, sql: str, parameters=()) -> _Rows:
        rows = _Rows(self.conn.execute(sql, parameters).fetchall())
        self.count[0] += len(rows)
        return rows


def _count_rows_read(monkeypatch) -> list[int]:
    """``[n]``: how many rows (of any table) any directory's catch-ups read from now on."""
    count = [0]
    real_catch_up = ChunkDirectory._catch_up

    def catch_up(self, conn):
        return real_catch_up(self, _CountingConnection(conn, count))

    monkeypatch.setattr(ChunkDirectory, "_catch_up", catch_up)
    return count


def test_a_catch_up_reads_only_what_other_handles_changed(tmp_path, monkeypatch):
    """Another handle appends to one series of many and deletes the series holding the
    newest row (so a new row takes that row's cid): the stale handle's catch-up reads
    just the new rows, and its writer appends after them."""
    path = tmp_path / "observations.sqlite3"
    first, second = _open(path), _open(path)
    committer = _committer(first)
    try:
        for name in [f"s{i}" for i in range(40)] + ["newest"]:
            push(committer, name, numeric([1.0, 2.0]))
        records = second.load_records()  # second's directory: every row, read once
        rows_read = _count_rows_read(monkeypatch)
        assert committer.submit(Delete("newest")).result(timeout=60) is True
        push(committer, "s0", numeric([3.0], 2))  # takes the deleted row's cid
        push(committer, "s1", numeric([3.0], 2))
    finally:
        _stop(committer)
    with sqlite3.connect(path) as conn:
        reused = conn.execute("SELECT count(*) FROM chunks WHERE cid <= 41").fetchone()
    assert reused == (41,)  # 40 survivors, and s0's new row in the deleted one's place
    session = second.writer()
    try:
        session.begin()  # catches up: the deletion, then the rows after the newest survivor
        assert rows_read == [1 + 2]  # not a row per series (41 of them)
        assert session.pending.head(records["newest"].sid) == (0, None)
        with pytest.raises(sqlite3.IntegrityError, match="extend its series"):
            append_raw(session, records["s0"].sid, 2, [9.0])  # seq 2 is s0's new row
        session.rollback()
        session.begin()
        append_raw(session, records["s0"].sid, 3, [9.0])
        session.commit()
    finally:
        session.close()
    assert [y for _, _, y in stored(first, "s0")] == [[1.0], [2.0], [3.0], [0.0]]
    assert set(first.load_records()) == {f"s{i}" for i in range(40)}


def test_a_restart_catches_up_once_and_its_first_write_reads_nothing_again(tmp_path, monkeypatch):
    """Start-up in either order (records, then writer): the first write's catch-up reads no
    row that loading the records read (no ordering between them is needed)."""
    path = tmp_path / "observations.sqlite3"
    _store_two_observations(path)
    storage = _open(path)
    epochs = storage.acquire_shards("restarted")  # another connection's commit
    rows_read = _count_rows_read(monkeypatch)
    records = storage.load_records()
    assert rows_read == [1 + 1]  # the end of the deletion log, and the one chunk
    session = storage.writer()
    committer = Committer(
        session, records, Recorder(storage), 100, epochs=epochs, n_shards=storage.n_shards
    )
    committer.start()
    try:
        assert push(committer, "s", numeric([2.0, 3.0], 1)).accepted == 1  # a re-sent t too
        push(committer, "t", numeric([5.0]))
    finally:
        _stop(committer)
    assert rows_read == [2]  # the first write's catch-up read nothing
    assert [y for _, _, y in stored(storage, "s")] == [[1.0], [2.0], [3.0]]


def test_a_commit_after_the_records_were_loaded_is_caught_up_with_at_the_first_write(tmp_path):
    path = tmp_path / "observations.sqlite3"
    _store_two_observations(path)
    storage = _open(path)
    sid = storage.load_records()["s"].sid
    session = storage.writer()
    other = _open(path).writer()  # another handle appends seq 2 after the records were loaded
    try:
        other.begin()
        append_raw(other, sid, 2, [7.0])
        other.commit()
    finally:
        other.close()
    try:
        session.begin()
        with pytest.raises(sqlite3.IntegrityError, match="extend its series"):
            append_raw(session, sid, 2, [9.0])  # seq 2 is taken
        session.rollback()
    finally:
        session.close()


def test_schema_3_migrates_to_4_and_logs_deletions_from_then_on(tmp_path):
    path = tmp_path / "observations.sqlite3"
    _store_two_observations(path)
    with sqlite3.connect(path) as conn:  # make it schema 3 as schema 3 wrote it
        conn.execute("DROP TRIGGER series_delete_logged")
        conn.execute("DROP TABLE series_gone")
        conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    storage = _open(path)
    with sqlite3.connect(path) as conn:
        (version,) = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    assert version == "4" == str(SCHEMA_VERSION)
    sid = storage.load_records()["s"].sid
    committer = _committer(storage)
    try:
        assert committer.submit(Delete("s")).result(timeout=60) is True
    finally:
        _stop(committer)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT sid FROM series_gone").fetchall() == [(sid,)]


def test_a_rejected_command_leaves_no_chunk_in_the_directory(tmp_path):
    """A chunk inserted in a savepoint that is rolled back is forgotten with it."""
    storage = _open(tmp_path / "observations.sqlite3")
    push_session = storage.writer()
    try:
        push_session.begin()
        sid = push_session.insert_series("s", "0" * 32, "{}", 0.0)
        push_session.savepoint()
        append_raw(push_session, sid, 0, [1.0, 2.0])
        push_session.rollback_savepoint()
        push_session.savepoint()
        append_raw(push_session, sid, 0, [3.0])  # seq 0 again: the first was undone
        push_session.release_savepoint()
        push_session.commit()
    finally:
        push_session.close()
    assert stored(storage, "s") == [(0, 3.0, [0.0])]
    assert storage.load_records()["s"].count == 1


@pytest.mark.parametrize(
    ("keys", "left_out"),
    [
        ([5.0], True),
        ([0.0, 1.0, 2.0, 3.0], True),
        ([0.1, 0.2, 0.3, 0.4], None),  # kept unless float64 arithmetic rebuilds them exactly
        ([-0.0, 1.0], False),  # -0.0 + 0 * step is +0.0: kept
        ([1.0, 2.0, 4.0], False),
        ([1_293_836_400_000_000 + 3_600_000_000 * i for i in range(24)], True),  # hourly ISO
        ([0, 3, 5], False),
    ],
)
def test_keys_left_out_when_even_come_back_bit_for_bit(keys, left_out):
    blob = encode_keys(keys, leave_out_even=True)
    back = StoredChunk(0, len(keys), keys[0], keys[-1], blob, b"").keys()
    assert [type(k) for k in back] == [type(k) for k in keys]
    dtype = "<i8" if isinstance(keys[0], int) else "<f8"
    assert np.asarray(back, dtype).tobytes() == np.asarray(keys, dtype).tobytes()
    if left_out is not None:
        assert (blob == b"") == left_out


def test_a_series_of_even_and_uneven_pushes_reads_back_exactly(tmp_path):
    storage = _open(tmp_path / "observations.sqlite3")
    committer = _committer(storage)
    pushes = [[(0, 1.0), (1, 2.0), (2, 3.0)], [(2.5, 4.0), (10, 5.0), (11, 6.0)], [(11.1, 7.0)]]
    try:
        for pairs in pushes:
            push(committer, "s", timed(pairs))
    finally:
        _stop(committer)
    with sqlite3.connect(storage.path) as conn:
        sizes = [len(t) for (t,) in conn.execute("SELECT t FROM chunks ORDER BY cid")]
    assert sizes == [0, 24, 0]  # the uneven chunk keeps its keys
    expected = [(float(t), y) for pairs in pushes for t, y in pairs]
    assert [(t, y) for _, t, [y] in stored(storage, "s")] == expected
