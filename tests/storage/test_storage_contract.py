"""The storage contract, on SQLite and on PostgreSQL alike (the ``store_backend`` fixture).

What every backend must do for the committer: durable records and observations that
round-trip exactly, group commit with per-command savepoints, acknowledgement after
commit, idempotency on ``(series, t)`` enforced by the database too, append-only rows.
"""

from __future__ import annotations

import struct

import pytest
from storage_helpers import WAIT, append_raw, numeric, push, stored, timed

from service.errors import ApiError
from service.storage.chunks import MAX_CHUNK
from service.storage.records import Configure, Delete, Ingest
from service.timestamps import parse_t


def test_initialise_is_idempotent_and_records_survive_reopening(open_store, make_committer):
    committer, _ = make_committer()
    push(committer, "a", numeric([1.0, 2.0, 3.0]))
    again = open_store()  # a second handle: initialise() on an existing database
    assert again.n_shards == 64
    record = again.load_records()["a"]
    assert record.count == 3 and record.last_key == 2.0 and record.time_kind == "number"
    assert record.params == committer.records["a"].params
    assert record.incarnation == committer.records["a"].incarnation


def test_values_and_times_round_trip_exactly_with_their_types(storage, make_committer):
    committer, _ = make_committer()
    tiny, huge = 5e-324, 1.7976931348623157e308
    push(committer, "num", timed([(0.1, tiny), (0.2, -0.0), (2**53, huge)]))
    iso = [("2011-01-01T00:00:00+01:00", 1.5), ("2011-01-01T01:00:00.000001+01:00", 2.5)]
    push(committer, "iso", timed(iso))
    multi = [(0, {"b": 1.25, "a": -3.0}), (1, {"b": 0.5, "a": 7.0})]
    push(committer, "multi", timed(multi))

    assert stored(storage, "num") == [(0, 0.1, [tiny]), (1, 0.2, [-0.0]), (2, 2.0**53, [huge])]
    keys = [parse_t(t).key for t, _ in iso]
    rows = stored(storage, "iso")
    assert [(seq, key) for seq, key, _ in rows] == [(0, keys[0]), (1, keys[1])]
    assert all(type(key) is int for _, key, _ in rows)  # ISO keys stay exact integers
    assert [y for _, _, y in stored(storage, "multi")] == [[1.25, -3.0], [0.5, 7.0]]

    records = storage.load_records()
    assert records["iso"].last_key == keys[1] and type(records["iso"].last_key) is int
    assert records["iso"].tz == 3600 and records["iso"].spacing.step == keys[1] - keys[0]
    assert records["num"].last_key == 2.0**53 and type(records["num"].last_key) is float
    assert records["multi"].channels == ("b", "a")
    reader = storage.reader()
    try:
        assert reader.times(records["iso"].sid, [1, 0, 7, -1]) == {0: keys[0], 1: keys[1]}
        (values, block_keys), *_ = reader.observation_blocks(records["multi"].sid, 0)
        assert values.tolist() == [[1.25, -3.0], [0.5, 7.0]] and block_keys == [0.0, 1.0]
    finally:
        reader.close()


def test_idempotent_on_series_and_t(storage, make_committer):
    committer, _ = make_committer()
    push(committer, "s", numeric([1.0, 2.0, 3.0]))
    again = push(committer, "s", numeric([2.0, 3.0, 4.0], start=1))
    assert (again.accepted, again.duplicates, again.record.count) == (1, 2, 4)
    with pytest.raises(ApiError) as conflict:
        push(committer, "s", numeric([9.0], start=2))
    assert conflict.value.status == 409 and "different y" in conflict.value.detail
    with pytest.raises(ApiError) as never:
        push(committer, "s", timed([(1.5, 0.0)]))
    assert never.value.status == 409 and "never stored" in never.value.detail
    assert [y for _, _, y in stored(storage, "s")] == [[1.0], [2.0], [3.0], [4.0]]
    assert storage.load_records()["s"].count == 4


def test_the_database_itself_refuses_a_chunk_that_does_not_extend_its_series(
    storage, make_committer
):
    """Idempotency does not rest on the committer alone: a stored chunk must continue its
    series (the next seq, a first t above the stored last t)."""
    committer, _ = make_committer()
    push(committer, "s", numeric([1.0, 2.0]))
    sid = storage.load_records()["s"].sid
    session = storage.writer()
    try:
        for start, keys in [(2, [1.0]), (1, [5.0]), (3, [5.0])]:
            session.begin()  # new seq with an old t; an old seq; a gap
            with pytest.raises(session.errors):
                append_raw(session, sid, start, keys)
            session.rollback()
        for keys in ([6.0, 5.0], [5.0, 5.0, 6.0], [5.0, 7.0, 6.0]):  # t going back inside
            session.begin()
            with pytest.raises(ValueError, match="strictly increase"):
                append_raw(session, sid, 2, keys)
            session.rollback()
        session.begin()
        append_raw(session, sid, 2, [5.0, 6.0])  # what extends it is taken
        session.rollback()
    finally:
        session.close()
    assert len(stored(storage, "s")) == 2


def test_a_long_push_is_stored_as_several_chunks_and_reads_back_whole(storage, make_committer):
    """A push longer than MAX_CHUNK becomes several chunks; reads, time lookups, re-sends
    and the series' state work across their boundaries."""
    n = 2 * MAX_CHUNK + 5
    committer, _ = make_committer()
    push(committer, "s", numeric([float(i) for i in range(n)]))
    record = storage.load_records()["s"]
    assert (record.count, record.last_key, record.spacing.step, record.spacing.run) == (
        n,
        float(n - 1),
        1.0,
        n - 1,
    )
    assert stored(storage, "s") == [(i, float(i), [float(i)]) for i in range(n)]
    reader = storage.reader()
    try:
        assert len(reader.fetch_chunks(record.sid, 0, 10)) == 3
        edges = [MAX_CHUNK - 1, MAX_CHUNK, 2 * MAX_CHUNK, n - 1]
        assert reader.times(record.sid, edges) == {s: float(s) for s in edges}
        assert reader.page(record.sid, MAX_CHUNK - 1, 2) == [
            (s, float(s), struct.pack("<d", s)) for s in (MAX_CHUNK - 1, MAX_CHUNK)
        ]
    finally:
        reader.close()
    again = push(
        committer, "s", numeric([float(i) for i in range(MAX_CHUNK - 2, n + 1)], MAX_CHUNK - 2)
    )
    assert (again.accepted, again.duplicates) == (1, n - MAX_CHUNK + 2)
    with pytest.raises(ApiError) as conflict:
        push(committer, "s", timed([(float(2 * MAX_CHUNK), -1.0)]))
    assert conflict.value.status == 409


def test_group_commit_isolates_a_rejected_command(storage, make_committer):
    """Commands queued together commit in one transaction; a 409 among them changes nothing."""
    committer, recorder = make_committer()
    release = recorder.hold()  # the committer waits in the first group's publication...
    first = committer.submit(Ingest("a", numeric([1.0, 2.0])))
    assert recorder.holding.wait(WAIT)
    commands = [  # ...while these queue up: they form the next group
        Ingest("a", numeric([1.0, 5.0])),  # 409: t=1 is stored with y=2
        Ingest("a", numeric([3.0], start=2)),
        Ingest("b", numeric([7.0])),
        Configure("c", {"delays": 4}),
        Delete("b"),
    ]
    futures = [committer.submit(c) for c in commands]
    recorder.pending = futures
    release.set()
    assert first.result(timeout=WAIT).record.count == 2
    for future in futures:
        future.exception(timeout=WAIT)  # wait for all of them
    assert committer.commits == 2  # the first group, then all the others at once
    assert isinstance(futures[0].exception(), ApiError) and futures[0].exception().status == 409
    assert futures[1].result().record.count == 3
    assert futures[4].result() is True
    assert [y for _, _, y in stored(storage, "a")] == [[1.0], [2.0], [3.0]]
    records = storage.load_records()
    assert set(records) == {"a", "c"} and records["c"].params["delays"] == 4
    assert recorder.violations == []


def test_pushes_arriving_within_the_commit_spacing_share_one_commit(storage, make_committer):
    """Under load, a group commit gathers what arrives within the spacing after the previous
    commit began (each sync writes whole disk blocks, however little changed)."""
    committer, recorder = make_committer(commit_spacing=1.0)
    push(committer, "a", numeric([1.0]))  # an idle committer commits at once
    futures = [committer.submit(Ingest(name, numeric([2.0]))) for name in "bcd"]
    recorder.pending = futures
    assert [f.result(timeout=WAIT).accepted for f in futures] == [1, 1, 1]
    assert committer.commits == 2
    assert sorted(storage.load_records()) == ["a", "b", "c", "d"]
    assert recorder.violations == []


def test_a_lone_serial_client_never_waits_for_the_commit_spacing(storage, make_committer):
    """With the server's count of pushes in flight, a push that is the only one in flight
    commits at once: a serial client is not held to one push per spacing (an hour here;
    waiting for it would fail the test by its timeout)."""
    committer, _ = make_committer(commit_spacing=3600.0, in_flight=lambda: 1)
    for start in range(5):
        assert push(committer, "s", numeric([1.0], start)).record.count == start + 1
    assert committer.commits == 5


def test_acknowledged_means_committed_and_published_first(storage, make_committer):
    committer, recorder = make_committer()
    for start in range(0, 50, 10):
        future = committer.submit(Ingest("s", numeric([float(i) for i in range(10)], start)))
        recorder.pending = [future]
        assert future.result(timeout=WAIT).accepted == 10
        assert len(stored(storage, "s")) == start + 10  # visible to a new connection
    appended = [e.chunk.start for e in recorder.effects if e.kind == "append"]
    assert appended == [0, 10, 20, 30, 40]
    assert recorder.violations == []


def test_configure_delete_and_sids_are_never_reused(storage, make_committer):
    committer, _ = make_committer()
    created = committer.submit(Configure("s", {"delays": 4})).result(timeout=WAIT)
    assert created.created and created.record.params["delays"] == 4
    push(committer, "s", numeric([1.0, 2.0]))
    same = committer.submit(Configure("s", {"delays": 4})).result(timeout=WAIT)
    assert not same.changed
    changed = committer.submit(Configure("s", {"delays": 6})).result(timeout=WAIT)
    assert changed.changed and changed.record.incarnation != created.record.incarnation
    assert storage.load_records()["s"].incarnation == changed.record.incarnation
    old_sid = changed.record.sid
    assert committer.submit(Delete("s")).result(timeout=WAIT) is True
    assert committer.submit(Delete("s")).result(timeout=WAIT) is False
    assert stored(storage, "s") == [] and "s" not in storage.load_records()
    reborn = push(committer, "s", numeric([9.0]))
    assert reborn.record.sid > old_sid and stored(storage, "s") == [(0, 0.0, [9.0])]


def test_max_series_is_403(make_committer):
    committer, _ = make_committer(max_series=2)
    push(committer, "a", numeric([1.0]))
    push(committer, "b", numeric([1.0]))
    with pytest.raises(ApiError) as full:
        push(committer, "c", numeric([1.0]))
    assert full.value.status == 403


def test_observations_are_append_only(storage, make_committer):
    committer, _ = make_committer()
    push(committer, "s", numeric([1.0]))
    session = storage.writer()
    try:
        session.begin()
        with pytest.raises(session.errors, match="append-only"):
            session._conn.execute("UPDATE chunks SET y = y")  # type: ignore[attr-defined]
        session.rollback()
    finally:
        session.close()
    assert stored(storage, "s") == [(0, 0.0, [1.0])]
