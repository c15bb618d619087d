"""Opening a database of an older schema: schema 1 (a row per observation) migrates to
chunks with nothing lost; a newer schema than this code reads is refused clearly.

The schema-1 tables are created here as schema 1 created them (the DDL of the version
that wrote them), on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import sqlite3
import struct

import pytest
from storage_helpers import Recorder, push, stored, timed

from service.errors import ApiError
from service.storage import Committer
from service.timestamps import parse_t

_SQLITE_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE series (
    sid INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, incarnation TEXT NOT NULL,
    params TEXT NOT NULL, channels TEXT, time_kind TEXT, count INTEGER NOT NULL DEFAULT 0,
    last_key, tz INTEGER, step, run INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL);
CREATE TABLE observations (
    sid INTEGER NOT NULL, seq INTEGER NOT NULL, t_key NOT NULL, y BLOB NOT NULL,
    PRIMARY KEY (sid, seq)) WITHOUT ROWID;
CREATE UNIQUE INDEX observations_t ON observations (sid, t_key);
CREATE TABLE shard_owner (shard INTEGER PRIMARY KEY, owner TEXT NOT NULL, epoch INTEGER NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1'), ('shards', '64');
"""

_POSTGRES_V1 = """
CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE series (
    sid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, id text NOT NULL UNIQUE,
    incarnation text NOT NULL, params text NOT NULL, channels text, time_kind text,
    count bigint NOT NULL DEFAULT 0, last_key_int bigint, last_key_num double precision,
    tz integer, step_int bigint, step_num double precision, run bigint NOT NULL DEFAULT 0,
    created_at double precision NOT NULL);
CREATE TABLE observations (
    sid bigint NOT NULL, seq bigint NOT NULL, t_int bigint, t_num double precision,
    y bytea NOT NULL, PRIMARY KEY (sid, seq));
CREATE TABLE shard_owner (shard integer PRIMARY KEY, owner text NOT NULL, epoch bigint NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1'), ('shards', '64');
"""

# Two series as schema 1 stored them: 2,500 numeric observations (more than one migrated
# chunk) with a regular step, and three ISO ones, two channels, in zone +01:00.
_N = 2500
_ISO = [parse_t(f"2011-01-01T0{h}:00:00+01:00").key for h in (0, 1, 3)]


def _f64(*values: float) -> bytes:
    return struct.pack(f"<{len(values)}d", *values)


def _write_v1(store_backend: str, where: str) -> None:
    """Create a schema-1 database at ``where`` (a SQLite path or a PostgreSQL URL)."""
    if store_backend == "sqlite":
        conn = sqlite3.connect(where)
        conn.executescript(_SQLITE_V1)
        conn.execute(
            "INSERT INTO series VALUES "
            "(1, 'num', ?, '{}', NULL, 'number', ?, ?, NULL, 1.0, ?, 0.0)",
            ("a" * 32, _N, float(_N - 1), _N - 1),
        )
        conn.execute(
            "INSERT INTO series VALUES (2, 'iso', ?, '{}', '[\"b\", \"a\"]', 'iso', 3, ?, 3600, "
            "?, 1, 0.0)",
            ("b" * 32, _ISO[2], _ISO[2] - _ISO[1]),
        )
        conn.executemany(
            "INSERT INTO observations VALUES (1, ?, ?, ?)",
            [(i, float(i), _f64(i * 0.5)) for i in range(_N)],
        )
        conn.executemany(
            "INSERT INTO observations VALUES (2, ?, ?, ?)",
            [(i, key, _f64(i, -i)) for i, key in enumerate(_ISO)],
        )
        conn.commit()
        conn.close()
        return
    import psycopg

    with psycopg.connect(where, autocommit=True) as conn:
        conn.execute(_POSTGRES_V1)
        conn.execute(
            "INSERT INTO series (id, incarnation, params, time_kind, count, last_key_num, "
            "step_num, run, created_at) VALUES ('num', %s, '{}', 'number', %s, %s, 1.0, %s, 0)",
            ("a" * 32, _N, float(_N - 1), _N - 1),
        )
        conn.execute(
            "INSERT INTO series (id, incarnation, params, channels, time_kind, count, "
            "last_key_int, tz, step_int, run, created_at) "
            "VALUES ('iso', %s, '{}', '[\"b\", \"a\"]', 'iso', 3, %s, 3600, %s, 1, 0)",
            ("b" * 32, _ISO[2], _ISO[2] - _ISO[1]),
        )
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO observations (sid, seq, t_num, y) VALUES (1, %s, %s, %b)",
                [(i, float(i), _f64(i * 0.5)) for i in range(_N)],
            )
            cursor.executemany(
                "INSERT INTO observations (sid, seq, t_int, y) VALUES (2, %s, %s, %b)",
                [(i, key, _f64(i, -i)) for i, key in enumerate(_ISO)],
            )


@pytest.fixture
def v1_database(store_backend, open_store, request, tmp_path):
    """``open_store``, where a schema-1 database with two series was written first."""
    if store_backend == "sqlite":
        where = tmp_path / "var" / "observations.sqlite3"
        where.parent.mkdir(parents=True)
        _write_v1(store_backend, str(where))
    else:
        _write_v1(store_backend, request.getfixturevalue("postgres_url"))
    return open_store


def test_schema_1_migrates_to_chunks_with_nothing_lost(v1_database):
    storage = v1_database()
    records = storage.load_records()
    num, iso = records["num"], records["iso"]
    assert (num.count, num.last_key, num.spacing.step, num.spacing.run) == (
        _N,
        float(_N - 1),
        1.0,
        _N - 1,
    )
    assert (iso.count, iso.last_key, iso.tz, iso.channels) == (3, _ISO[2], 3600, ("b", "a"))
    assert type(iso.last_key) is int and iso.spacing.step == _ISO[2] - _ISO[1]
    assert stored(storage, "num") == [(i, float(i), [i * 0.5]) for i in range(_N)]
    assert stored(storage, "iso") == [(i, key, [i, -i]) for i, key in enumerate(_ISO)]
    assert v1_database().load_records() == records  # opening again changes nothing

    # The migrated series go on: re-sent observations anywhere in the history are
    # duplicates, a changed one is a 409, and new ones extend the series.
    committer = Committer(
        storage.writer(),
        records,
        Recorder(storage),
        100,
        epochs=storage.acquire_shards("test"),
        n_shards=storage.n_shards,
    )
    committer.start()
    try:
        resent = timed([(5, 2.5), (1500, 750.0), (_N - 1, (_N - 1) * 0.5), (_N, 7.0)])
        again = push(committer, "num", resent)
        assert (again.accepted, again.duplicates, again.record.count) == (1, 3, _N + 1)
        with pytest.raises(ApiError) as conflict:
            push(committer, "num", timed([(1024, 0.0)]))
        assert conflict.value.status == 409 and "different y" in conflict.value.detail
    finally:
        committer.stop()
        committer.publisher.close()  # type: ignore[attr-defined]
    assert stored(storage, "num")[-1] == (_N, float(_N), [7.0])


def test_a_push_of_an_old_server_in_flight_during_the_migration_is_kept(
    store_backend, open_store, request
):
    """An old-schema server's push that commits while the migration runs is migrated."""
    if store_backend != "postgres":
        pytest.skip("SQLite's migration holds the write lock (BEGIN IMMEDIATE) throughout")
    import threading

    import psycopg

    url = request.getfixturevalue("postgres_url")
    _write_v1(store_backend, url)
    old_server = psycopg.connect(url)
    try:
        # A push in flight: written, not committed yet.
        old_server.execute(
            "INSERT INTO observations (sid, seq, t_num, y) VALUES (1, %s, %s, %b)",
            (_N, float(_N), _f64(9.0)),
        )
        old_server.execute(
            "UPDATE series SET count = %s, last_key_num = %s WHERE sid = 1", (_N + 1, float(_N))
        )
        opened: list[object] = []
        migration = threading.Thread(target=lambda: opened.append(open_store()), daemon=True)
        migration.start()
        # Commit only once the migration waits on a lock, as the race needs.
        with psycopg.connect(url, autocommit=True) as watcher:
            waiting = False
            for _ in range(6000):
                (waiting,) = watcher.execute(
                    "SELECT count(*) > 0 FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                ).fetchone()
                if waiting or not migration.is_alive():
                    break
                watcher.execute("SELECT pg_sleep(0.01)")
        assert waiting, "the migration never waited for the push in flight"
        old_server.commit()
        migration.join(timeout=120)
        assert opened, "the migration did not finish"
    finally:
        old_server.close()
    storage = opened[0]
    assert storage.load_records()["num"].count == _N + 1  # type: ignore[attr-defined]
    assert stored(storage, "num")[-1] == (_N, float(_N), [9.0])


def test_schema_2_gains_the_snapshots_table(storage, store_backend, open_store, tmp_path):
    """PostgreSQL's schema 3 adds the snapshots table (SQLite's snapshots are files)."""
    if store_backend != "postgres":
        pytest.skip("SQLite's schema has no snapshots table (its snapshots are files)")
    committer, _ = _committer(storage)
    try:
        push(committer, "s", timed([(0, 1.0), (1, 2.0)]))
    finally:
        committer.stop()
        committer.publisher.close()  # type: ignore[attr-defined]
    import psycopg

    # Schema 2 is schema 3 without the snapshots table.
    with psycopg.connect(storage.url, autocommit=True) as conn:  # type: ignore[attr-defined]
        conn.execute("DROP TABLE snapshots")
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    migrated = open_store()
    with psycopg.connect(storage.url, autocommit=True) as conn:  # type: ignore[attr-defined]
        (version,) = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    assert version == "3"
    record = migrated.load_records()["s"]
    assert stored(migrated, "s") == [(0, 0.0, [1.0]), (1, 1.0, [2.0])]
    epochs = migrated.acquire_shards("after migration")
    store = migrated.snapshot_store(tmp_path / "unused", epochs)
    try:
        assert store.stored() == {}
        assert store.save_bytes("s", record.sid, record.incarnation, 2, b"a model file")
        assert store.stored() == {record.incarnation: [2]}
    finally:
        store.close()


def _committer(storage):
    recorder = Recorder(storage)
    committer = Committer(
        storage.writer(),
        storage.load_records(),
        recorder,
        100,
        epochs=storage.acquire_shards("test"),
        n_shards=storage.n_shards,
    )
    committer.start()
    return committer, recorder


def test_a_newer_schema_is_refused_with_a_clear_error(storage, store_backend, open_store):
    session = storage.writer()
    try:
        session.begin()
        session._conn.execute(  # type: ignore[attr-defined]
            "UPDATE meta SET value = '99' WHERE key = 'schema_version'"
        )
        session.commit()
    finally:
        session.close()
    # PostgreSQL's 3 added snapshots; SQLite's 3 dropped the index on chunks, its 4 logs
    # deleted series (for the chunk directory).
    newest = 4 if store_backend == "sqlite" else 3
    with pytest.raises(RuntimeError, match=f"schema version 99; this server reads up to {newest}"):
        open_store()
