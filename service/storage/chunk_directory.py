"""SQLite's chunk directory: where each series' chunks are, kept in memory instead of an index.

From schema 3 the ``chunks`` table has no index on ``(sid, start)``: rows stay in arrival
order (``cid``) and a push writes only the table's newest page, not also a leaf of an
index per series pushed to (that leaf was a third of the bytes a commit wrote, and
again at each checkpoint). Lookups by ``seq`` go through this directory instead: per
series, the ``start`` and ``cid`` of each chunk, the next ``seq`` and the last time key.
It is built by one scan in ``cid`` order when the storage is first used, and kept current
by the writer, which publishes a transaction's chunks once it has committed (so readers
never see a ``cid`` that is not committed, and the acknowledgement comes after).

The directory is also what enforces that a chunk extends its series (the next ``seq``, a
later ``t``): the writer checks it before each insert (`Pending.head`). Another
connection's commits (another handle on the file, an acquisition of shards) are caught
up with before the writer relies on it (`ChunkDirectory.refresh`, on a change of
``PRAGMA data_version``) and before a reader does (`ChunkDirectory.sync`, when the newest
row is not the one it knows: a reader reads the newest row in the same statement as the
chunks, `ChunkDirectory.locate_as_of`, and catches up only if it has moved).

A catch-up reads only what changed since the last: the series deleted since (a trigger
logs each deletion in ``series_gone``, in order) and the rows after the newest surviving
``cid``. Sids are never reused and new rows always get a ``cid`` above every existing
row's, so that is exact: only a deletion of the series holding the newest row lets a new
row take a ``cid`` at or below one seen, and then the newest surviving row is recomputed.
"""

from __future__ import annotations

import sqlite3
import threading
from array import array
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..timestamps import TimeKey

#: ``(cid, sid, start, n, t_last)``: what the directory keeps of a row.
_ROWS = "SELECT cid, sid, start, n, t_last FROM chunks WHERE cid > ? ORDER BY cid"
#: Series deleted after a point of the deletion log (`sqlite_schema`: ``series_gone``).
_GONE = "SELECT gone, sid FROM series_gone WHERE gone > ? ORDER BY gone"
_LAST_GONE = "SELECT coalesce(max(gone), 0) FROM series_gone"
#: The table's newest row, as a subquery (a reader compares it with the directory's tail).
NEWEST_ROW = "(SELECT cid, sid FROM chunks ORDER BY cid DESC LIMIT 1)"


@dataclass(slots=True)
class SeriesChunks:
    """One series' chunks in ``seq`` order (which is also ``cid`` order: appends only)."""

    starts: array = field(default_factory=lambda: array("q"))
    cids: array = field(default_factory=lambda: array("q"))
    end: int = 0  # the next seq
    t_last: TimeKey | None = None

    def add(self, cid: int, start: int, n: int, t_last: TimeKey) -> None:
        if self.cids and cid <= self.cids[-1]:
            return  # known already (a reader caught up before the writer published it)
        self.starts.append(start)
        self.cids.append(cid)
        self.end, self.t_last = start + n, t_last

    def locate(self, seq: int, max_chunks: int) -> list[int]:
        """``cid``s of the chunks from the one holding ``seq`` (or the last before it) on."""
        at = max(bisect_right(self.starts, seq) - 1, 0)
        return self.cids[at : at + max_chunks].tolist()


class ChunkDirectory:
    """The committed chunks of every series of one database, shared by its readers and writer."""

    def __init__(self) -> None:
        self._series: dict[int, SeriesChunks] = {}
        self._tail: tuple[int, int] | None = None  # (cid, sid) of the newest row known
        self._gone = 0  # the last deletion logged (series_gone) that has been applied
        self._lock = threading.Lock()

    # -- reads -----------------------------------------------------------------------------
    def locate(self, sid: int, seq: int, max_chunks: int) -> list[int]:
        return self.locate_as_of(sid, seq, max_chunks)[0]

    def locate_as_of(
        self, sid: int, seq: int, max_chunks: int
    ) -> tuple[list[int], tuple[int, int] | None]:
        """`locate`, with the ``(cid, sid)`` of the newest row known when it answered: if
        the table's newest row is still that one, the answer was complete."""
        with self._lock:
            chunks = self._series.get(sid)
            return ([] if chunks is None else chunks.locate(seq, max_chunks)), self._tail

    def head(self, sid: int) -> tuple[int, TimeKey | None]:
        """The series' next ``seq`` and last time key (``0, None``: nothing stored)."""
        with self._lock:
            chunks = self._series.get(sid)
            return (0, None) if chunks is None else (chunks.end, chunks.t_last)

    # -- keeping it current ----------------------------------------------------------------
    def refresh(self, conn: sqlite3.Connection) -> None:
        """Catch up with every commit so far (``conn`` must be in a transaction, for one
        snapshot): drop the series deleted since the last catch-up, read the rows after
        the newest surviving one. Costs what changed, not the database's size."""
        with self._lock:
            self._catch_up(conn)

    def refresh_newest(self, conn: sqlite3.Connection) -> dict[int, int]:
        """`refresh`, returning each series' newest ``cid`` as of ``conn``'s snapshot (the
        directory may move on as soon as this returns)."""
        with self._lock:
            self._catch_up(conn)
            return {sid: chunks.cids[-1] for sid, chunks in self._series.items() if chunks.cids}

    def _catch_up(self, conn: sqlite3.Connection) -> None:
        if not self._series:  # nothing known, so nothing to drop: skip the log to its end
            (self._gone,) = conn.execute(_LAST_GONE).fetchone()
        else:
            gone = conn.execute(_GONE, (self._gone,)).fetchall()
            if gone:
                self._gone = gone[-1][0]
                self._drop({sid for _, sid in gone})
        self._load(conn.execute(_ROWS, (0 if self._tail is None else self._tail[0],)))

    def sync(self, conn: sqlite3.Connection) -> None:
        """Catch up if another connection has committed rows this directory has not seen
        (``conn``: an autocommit connection, used for one read transaction if so)."""
        row = conn.execute(f"SELECT cid, sid FROM {NEWEST_ROW}").fetchone()
        with self._lock:
            if (None if row is None else tuple(row)) == self._tail:
                return
        conn.execute("BEGIN")
        try:
            self.refresh(conn)
        finally:
            conn.execute("COMMIT")

    def publish(
        self, added: Iterable[tuple[int, int, int, int, TimeKey]], dropped: set[int]
    ) -> None:
        """Apply a committed transaction: its new chunks ``(cid, sid, start, n, t_last)``
        in ``cid`` order, and its deleted series."""
        with self._lock:
            self._drop(dropped)
            # A series created and deleted in one transaction: its chunks go too.
            self._load(row for row in added if row[1] not in dropped)

    def _drop(self, sids: set[int]) -> None:
        for sid in sids:
            self._series.pop(sid, None)
        if self._tail is not None and self._tail[1] in sids:
            self._retail()  # the newest row known went with its series

    def _load(self, rows: Iterable[tuple[int, int, int, int, TimeKey]]) -> None:
        for cid, sid, start, n, t_last in rows:
            chunks = self._series.get(sid)
            if chunks is None:
                chunks = self._series[sid] = SeriesChunks()
            chunks.add(cid, start, n, t_last)
            if self._tail is None or cid > self._tail[0]:
                self._tail = (cid, sid)

    def _retail(self) -> None:
        """Recompute the newest row known (after its series was dropped: a scan of the
        series, but only on that deletion)."""
        self._tail = None
        for sid, chunks in self._series.items():
            if chunks.cids and (self._tail is None or chunks.cids[-1] > self._tail[0]):
                self._tail = (chunks.cids[-1], sid)


class Pending:
    """A writer's view: the committed directory plus its own transaction's changes, with
    the one savepoint level the committer uses (a rejected command's chunks go).

    Each series' chunks of this transaction are indexed (positions in ``added``), so a
    lookup costs the series' own chunks, and a rollback to the mark costs what was done
    since it: neither scans the whole group."""

    def __init__(self, directory: ChunkDirectory) -> None:
        self.directory = directory
        self.clear()

    def clear(self) -> None:
        self.added: list[tuple[int, int, int, int, TimeKey]] = []  # (cid, sid, start, n, t_last)
        self.dropped: set[int] = set()
        self._mine: dict[int, list[int]] = {}  # sid -> positions of its chunks in ``added``
        self._dropped_order: list[int] = []  # ``dropped`` in order (a rollback undoes the tail)
        self._mark = (0, 0)

    def mark(self) -> None:
        self._mark = (len(self.added), len(self._dropped_order))

    def rollback_to_mark(self) -> None:
        size, n_dropped = self._mark
        for _, sid, _, _, _ in reversed(self.added[size:]):
            positions = self._mine[sid]
            positions.pop()  # the series' newest: chunks were added in order
            if not positions:
                del self._mine[sid]
        del self.added[size:]
        for sid in self._dropped_order[n_dropped:]:
            self.dropped.discard(sid)
        del self._dropped_order[n_dropped:]

    def head(self, sid: int) -> tuple[int, TimeKey | None]:
        if sid in self.dropped:
            return 0, None
        positions = self._mine.get(sid)
        if positions:
            _, _, start, n, t_last = self.added[positions[-1]]
            return start + n, t_last
        return self.directory.head(sid)

    def check_extends(self, sid: int, start: int, t_first: TimeKey, t_last: TimeKey) -> None:
        """Refuse a chunk that does not continue its series (next seq, a later t), as
        schema 2's trigger did: idempotency on ``(series, t)`` does not rest on the
        committer's records alone."""
        end, last = self.head(sid)
        if start != end or (last is not None and t_first <= last) or t_last < t_first:
            raise sqlite3.IntegrityError("a chunk must extend its series (next seq, later t)")

    def add(self, cid: int, sid: int, start: int, n: int, t_last: TimeKey) -> None:
        self._mine.setdefault(sid, []).append(len(self.added))
        self.added.append((cid, sid, start, n, t_last))

    def drop(self, sid: int) -> None:
        if sid not in self.dropped:
            self.dropped.add(sid)
            self._dropped_order.append(sid)

    def locate(self, sid: int, seq: int, max_chunks: int) -> list[int]:
        """As `ChunkDirectory.locate`, over the committed chunks and this transaction's
        (which follow them: a series' chunks are appended in ``seq`` order)."""
        if sid in self.dropped:
            return []
        positions = self._mine.get(sid)
        if not positions:
            return self.directory.locate(sid, seq, max_chunks)
        added = self.added
        if seq >= added[positions[0]][2]:  # the answer starts among this transaction's chunks
            at = bisect_right(positions, seq, key=lambda position: added[position][2]) - 1
            return [added[position][0] for position in positions[at : at + max_chunks]]
        committed = self.directory.locate(sid, seq, max_chunks)
        rest = max_chunks - len(committed)
        return committed + [added[position][0] for position in positions[: max(rest, 0)]]

    def publish(self) -> None:
        """After COMMIT: the transaction's changes become the committed directory's."""
        self.directory.publish(self.added, self.dropped)
        self.clear()
