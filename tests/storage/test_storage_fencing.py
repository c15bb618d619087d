"""Fencing: one owner per shard; a writer whose epoch is stale is refused and writes nothing."""

from __future__ import annotations

import threading

import pytest
from storage_helpers import WAIT, append_raw, numeric, push, stored

from service.storage import StaleOwner
from service.storage.records import Configure, Delete, shard_of


def elsewhere(storage, shard: int) -> str:
    """A series id in another shard."""
    return next(f"y{i}" for i in range(1000) if shard_of(f"y{i}", storage.n_shards) != shard)


def test_acquiring_bumps_epochs_and_names_the_owner(storage):
    first = storage.acquire_shards("one")
    assert set(first) == set(range(storage.n_shards))
    second = storage.acquire_shards("two", [3, 5])
    assert second == {3: first[3] + 1, 5: first[5] + 1}
    owners = storage.owners()
    assert owners[3] == ("two", first[3] + 1) and owners[4] == ("one", first[4])


def test_a_stale_writer_is_refused_and_writes_nothing(storage, make_committer):
    old, _ = make_committer()
    push(old, "x", numeric([1.0, 2.0]))
    shard = shard_of("x", storage.n_shards)
    other = elsewhere(storage, shard)
    taken = storage.acquire_shards("new owner", [shard])  # another writer takes x's shard

    for command in (Delete("x"), Configure("x", {"delays": 4})):
        with pytest.raises(StaleOwner) as refused:
            old.submit(command).result(timeout=WAIT)
        assert refused.value.status == 503 and f"no longer owns shard {shard}" in str(
            refused.value.detail
        )
    with pytest.raises(StaleOwner):
        push(old, "x", numeric([3.0], start=2))
    assert [y for _, _, y in stored(storage, "x")] == [[1.0], [2.0]]
    assert storage.load_records()["x"].count == 2

    push(old, other, numeric([1.0]))  # its other shards are still its own
    new, _ = make_committer(epochs=taken)
    assert push(new, "x", numeric([3.0], start=2)).record.count == 3
    with pytest.raises(StaleOwner):
        push(new, other, numeric([2.0], start=1))  # never acquired by the new writer
    assert [y for _, _, y in stored(storage, other)] == [[1.0]]


def test_a_stale_command_does_not_spoil_its_group(storage, make_committer):
    old, recorder = make_committer()
    shard = shard_of("x", storage.n_shards)
    other = elsewhere(storage, shard)
    release = recorder.hold()
    first = old.submit(Configure("first", {}))  # the committer waits in its publication
    assert recorder.holding.wait(WAIT)
    storage.acquire_shards("new owner", [shard])
    refused = old.submit(Configure("x", {}))
    accepted = old.submit(Configure(other, {}))
    release.set()
    assert first.result(timeout=WAIT).created
    assert isinstance(refused.exception(timeout=WAIT), StaleOwner)
    assert accepted.result(timeout=WAIT).created
    assert old.commits == 2 and set(storage.load_records()) == {"first", other}


def test_an_acquisition_waits_for_a_writer_that_checked_its_epoch(storage):
    """A transaction that passed the fence commits before the shard can change hands."""
    epochs = storage.acquire_shards("writer", [0])
    session = storage.writer()
    acquired: dict[int, int] = {}
    try:
        session.begin()
        assert session.shard_epochs([0]) == {0: epochs[0]}
        sid = session.insert_series("x", "0" * 32, "{}", 0.0)
        thief = threading.Thread(target=lambda: acquired.update(storage.acquire_shards("t", [0])))
        thief.start()
        if type(storage).__name__ == "PostgresStorage":
            assert _waits_on_a_lock(storage), "the acquisition did not wait for the writer"
        append_raw(session, sid, 0, [1.0])
        session.commit()
        thief.join(timeout=WAIT)
        assert acquired == {0: epochs[0] + 1}
        session.begin()
        assert session.shard_epochs([0]) == {0: epochs[0] + 1}  # the writer now sees it lost
        session.rollback()
    finally:
        session.close()
    assert storage.load_records()["x"].sid == sid


def _waits_on_a_lock(storage) -> bool:
    """Whether some PostgreSQL backend is waiting for a lock (bounded poll)."""
    import psycopg

    with psycopg.connect(storage.url, autocommit=True) as conn:
        for _ in range(2000):
            row = conn.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()
            if row and row[0] > 0:
                return True
            conn.execute("SELECT pg_sleep(0.005)")
    return False
