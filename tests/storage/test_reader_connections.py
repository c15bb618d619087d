"""Readers keep one connection per thread (`service.storage.connections`): one that a
failure left unusable is replaced at its next use, not kept for the thread's lifetime."""

from __future__ import annotations

import pytest
from storage_helpers import numeric, push

from service.storage.connections import ConnectionPerThread


class _Fake:
    def __init__(self) -> None:
        self.closed = False
        self.broken = False

    def close(self) -> None:
        self.closed = True


def test_an_unusable_connection_is_closed_and_replaced_and_not_kept():
    opened: list[_Fake] = []

    def open_() -> _Fake:
        opened.append(_Fake())
        return opened[-1]

    conns = ConnectionPerThread(open_, lambda conn: not (conn.closed or conn.broken))
    first = conns.get()
    assert conns.get() is first  # kept while usable
    first.broken = True
    second = conns.get()
    assert second is not first and first.closed  # the broken one is freed, not leaked
    conns.close()
    assert second.closed and opened == [first, second]  # nothing else was opened


def _count(reader, sid: int) -> int:
    return sum(chunk.n for chunk in reader.fetch_chunks(sid, 0, 100))


def test_a_reader_replaces_a_connection_broken_on_purpose(storage, make_committer):
    """Closed, or left inside a transaction (a stale snapshot): the next read reopens."""
    committer, _ = make_committer()
    sid = push(committer, "s", numeric([1.0, 2.0])).record.sid
    reader = storage.reader()
    try:
        assert _count(reader, sid) == 2
        broken = reader._conns.get()
        broken.close()
        assert _count(reader, sid) == 2
        assert reader._conns.get() is not broken

        stuck = reader._conns.get()
        stuck.execute("BEGIN")  # as a failure between BEGIN and COMMIT would leave it
        stuck.execute("SELECT count(*) FROM chunks").fetchall()  # its snapshot starts here
        push(committer, "s", numeric([3.0], 2))
        assert _count(reader, sid) == 3  # not the stuck transaction's snapshot
        assert reader._conns.get() is not stuck
    finally:
        reader.close()


def test_a_postgres_reader_reconnects_after_the_server_drops_its_connection(
    storage, make_committer, store_backend
):
    if store_backend != "postgres":
        pytest.skip("a dropped server connection is PostgreSQL's failure")
    import psycopg

    committer, _ = make_committer()
    sid = push(committer, "s", numeric([1.0, 2.0])).record.sid
    reader = storage.reader()
    try:
        assert _count(reader, sid) == 2
        dropped = reader._conns.get()
        with psycopg.connect(storage.url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (dropped.info.backend_pid,))
        with pytest.raises(psycopg.OperationalError):
            _count(reader, sid)  # the loss is found by using the connection
        assert _count(reader, sid) == 2  # and the next read is on a new one
        assert dropped.closed
    finally:
        reader.close()
