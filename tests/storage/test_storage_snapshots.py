"""The snapshot stores of both backends: files beside SQLite, rows in PostgreSQL.

Both keep the newest snapshot of an incarnation (candidates newest first), drop the
older ones on a write, and discard what they are told to. The PostgreSQL store is
shared, so it is also fenced (a fenced-off owner stores nothing) and refuses snapshots
of series that are gone.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from storage_helpers import numeric, push

from episodic_koopman import EpisodicKoopman
from episodic_koopman.persistence import model_to_bytes
from service.storage import StaleOwner
from service.storage.records import Configure, Delete, shard_of


def model_bytes(n: int) -> bytes:
    """A real model file: a default model after ``n`` observations."""
    model = EpisodicKoopman()
    model.learn_many([float(i % 7) for i in range(n)])
    return model_to_bytes(model)


def _epochs(storage) -> dict[int, int]:
    return {shard: epoch for shard, (_, epoch) in storage.owners().items()}


def test_a_write_replaces_the_older_snapshot_and_loads_back(storage, make_committer, tmp_path):
    committer, _ = make_committer()
    push(committer, "s", numeric([float(i % 7) for i in range(40)]))
    record = storage.load_records()["s"]
    store = storage.snapshot_store(tmp_path / "snapshots", _epochs(storage))
    try:
        first, second = model_bytes(20), model_bytes(40)
        assert store.save_bytes("s", record.sid, record.incarnation, 20, first)
        assert store.candidates(record.incarnation, 10**9) == [20]
        assert store.save_bytes("s", record.sid, record.incarnation, 40, second)
        assert store.candidates(record.incarnation, 10**9) == [40]
        assert store.candidates(record.incarnation, 39) == []
        assert store.stored() == {record.incarnation: [40]}  # the older one is gone
        assert store.size(record.incarnation, 40) == len(second)
        assert model_to_bytes(store.load(record.incarnation, 40)) == second
        assert store.incarnations() == {record.incarnation}
    finally:
        store.close()
    reopened = storage.snapshot_store(tmp_path / "snapshots", _epochs(storage))
    try:  # a new store (a restarted server) finds it
        assert reopened.candidates(record.incarnation, 10**9) == [40]
        reopened.discard_invalid(record.incarnation, 40)
        assert reopened.candidates(record.incarnation, 10**9) == []
        assert reopened.stored() == {}
    finally:
        reopened.close()


def test_discard_removes_every_snapshot_of_an_incarnation(storage, make_committer, tmp_path):
    committer, _ = make_committer()
    push(committer, "s", numeric([1.0, 2.0]))
    record = storage.load_records()["s"]
    store = storage.snapshot_store(tmp_path / "snapshots", _epochs(storage))
    try:
        assert store.save_bytes("s", record.sid, record.incarnation, 2, model_bytes(2))
        store.discard(record.incarnation)
        assert store.incarnations() == set() and store.stored() == {}
        with pytest.raises(FileNotFoundError):
            store.load(record.incarnation, 2)
    finally:
        store.close()


def _postgres_only(store_backend: str) -> None:
    if store_backend != "postgres":
        pytest.skip("files belong to one server: only the database store is shared and fenced")


def test_a_fenced_off_owner_cannot_write_or_delete_a_snapshot(
    storage, store_backend, make_committer, tmp_path
):
    _postgres_only(store_backend)
    committer, _ = make_committer()
    push(committer, "s", numeric([float(i % 7) for i in range(40)]))
    record = storage.load_records()["s"]
    old = storage.snapshot_store(tmp_path / "old", _epochs(storage))
    try:
        assert old.save_bytes("s", record.sid, record.incarnation, 20, model_bytes(20))
        shard = shard_of("s", storage.n_shards)
        taken = storage.acquire_shards("new owner", [shard])
        with pytest.raises(StaleOwner) as refused:
            old.save_bytes("s", record.sid, record.incarnation, 40, model_bytes(40))
        assert f"no longer owns shard {shard}" in str(refused.value.detail)
        old.discard(record.incarnation)  # refused too (logged): the row stays
        new = storage.snapshot_store(tmp_path / "new", {**_epochs(storage), **taken})
        try:
            assert new.stored() == {record.incarnation: [20]}
            assert new.save_bytes("s", record.sid, record.incarnation, 40, model_bytes(40))
            assert new.stored() == {record.incarnation: [40]}
        finally:
            new.close()
    finally:
        old.close()


def test_the_database_refuses_snapshots_of_series_that_are_gone(
    storage, store_backend, make_committer, tmp_path
):
    _postgres_only(store_backend)
    committer, _ = make_committer()
    push(committer, "a", numeric([1.0, 2.0]))
    push(committer, "b", numeric([1.0, 2.0]))
    a, b = storage.load_records()["a"], storage.load_records()["b"]
    store = storage.snapshot_store(tmp_path / "snapshots", _epochs(storage))
    try:
        assert store.save_bytes("a", a.sid, a.incarnation, 2, model_bytes(2))
        assert store.save_bytes("b", b.sid, b.incarnation, 2, model_bytes(2))
        assert not store.save_bytes("a", a.sid, a.incarnation, 1, model_bytes(1))  # older
        assert not store.save_bytes("a", a.sid, "f" * 32, 2, model_bytes(2))  # not its incarnation
        # Deleting or reconfiguring deletes the snapshot in the same transaction.
        committer.submit(Delete("a")).result(timeout=60)
        committer.submit(Configure("b", {"delays": 4})).result(timeout=60)
        assert store.stored() == {}
        assert not store.save_bytes("a", a.sid, a.incarnation, 2, model_bytes(2))
        assert not store.save_bytes("b", b.sid, b.incarnation, 2, model_bytes(2))
        assert store.stored() == {}
    finally:
        store.close()


def test_a_store_sees_only_the_snapshots_of_its_shards(
    storage, store_backend, make_committer, tmp_path: Path
):
    _postgres_only(store_backend)
    committer, _ = make_committer()
    push(committer, "a", numeric([1.0, 2.0]))
    a = storage.load_records()["a"]
    epochs = _epochs(storage)
    shard = shard_of("a", storage.n_shards)
    store = storage.snapshot_store(tmp_path / "all", epochs)
    try:
        assert store.save_bytes("a", a.sid, a.incarnation, 2, model_bytes(2))
    finally:
        store.close()
    others = storage.snapshot_store(
        tmp_path / "others", {k: v for k, v in epochs.items() if k != shard}
    )
    try:  # e.g. another Ray shard actor: it neither sees nor discards a's snapshot
        assert others.incarnations() == set() and others.stored() == {}
        others.discard(a.incarnation)
    finally:
        others.close()
    mine = storage.snapshot_store(tmp_path / "mine", {shard: epochs[shard]})
    try:
        assert mine.candidates(a.incarnation, 10**9) == [2]
    finally:
        mine.close()


def test_a_snapshot_racing_a_delete_is_not_left_behind(
    storage, store_backend, make_committer, tmp_path
):
    """A delete whose transaction is open while a snapshot is written: whichever commits
    first, no snapshot of the deleted series remains (the upsert share-locks the series row,
    and the delete removes snapshots after the series row)."""
    _postgres_only(store_backend)
    committer, _ = make_committer()
    push(committer, "s", numeric([1.0, 2.0]))
    record = storage.load_records()["s"]
    store = storage.snapshot_store(tmp_path / "snapshots", _epochs(storage))
    session = storage.writer()
    try:
        session.begin()
        session.delete_series(record.sid)  # holds the series row until it commits
        outcome: list[bool] = []
        writer = threading.Thread(
            target=lambda: outcome.append(
                store.save_bytes("s", record.sid, record.incarnation, 2, model_bytes(2))
            )
        )
        writer.start()
        session.commit()
        writer.join(60)
        assert not writer.is_alive()
        assert outcome == [False] and store.stored() == {}
    finally:
        session.close()
        store.close()
