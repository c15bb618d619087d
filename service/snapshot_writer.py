"""The snapshot writer: one thread that captures models and writes their snapshots.

Applies and reads never wait behind disk I/O. For each requested series the
writer takes the series' lock only to copy the model's state
(`episodic_koopman.persistence.capture`, a memory copy), then encodes the file
and stores it (`SnapshotStore.save_bytes`: a file, or a database row) without the
lock. A store that refuses the write (the series is gone; this server no longer
owns its shard) leaves the series' snapshot state as it was.

Encoding holds the GIL (a few milliseconds a model), which every request on the
event loop needs too: back to back, a burst of snapshots would slow every read
by the share of the GIL it takes. So the writer paces itself while serving: after
each snapshot it waits as long as that snapshot's encoding took, taking at most
half the GIL. Shutdown writes at full speed.

The queue is bounded by the number of series: it holds at most one request per
series, and a request captures the model as it is when the writer gets to it,
so a newer request never adds a second snapshot of the same series. Requests
are served in the order they were made (shutdown queues the series furthest
ahead of their snapshots first).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from episodic_koopman import pin_threads
from episodic_koopman.persistence import CapturedModel, capture

from .snapshots import SnapshotStore
from .storage.base import StaleOwner

log = logging.getLogger("episodic_koopman.service")


class Snapshottable(Protocol):
    """What the writer needs of a series (`service.series.Series`)."""

    lock: threading.Lock
    model: Any
    model_incarnation: str | None
    applied: int
    deleted: bool
    snapshot_seq: int
    snapshot_bytes: int
    snapshot_at: float
    snapshot_queued: bool

    @property
    def id(self) -> str: ...

    @property
    def sid(self) -> int: ...

    @property
    def current_incarnation(self) -> str: ...


@dataclass(frozen=True)
class Captured:
    """One series' model state, copied under its lock."""

    state: CapturedModel
    sid: int
    incarnation: str
    seq: int


class SnapshotWriter:
    """A thread writing requested snapshots, one series at a time."""

    def __init__(
        self, store: SnapshotStore, on_written: Callable[[Snapshottable, int], None]
    ) -> None:
        self.store = store
        self.on_written = on_written  # (series, file size), on the writer thread
        # Test hook: called on the writer thread after a capture, before its file is written.
        self.before_write: Callable[[Snapshottable], None] | None = None
        self.written = 0  # snapshots written since start
        self._queue: OrderedDict[int, Snapshottable] = OrderedDict()
        self._busy = False
        self._stopping = False
        self._hurry = False  # shutdown: no pacing
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="snapshot-writer", daemon=True)
        self._thread.start()

    def request(self, series: Snapshottable) -> bool:
        """Queue a snapshot of ``series`` unless one is already queued (any thread)."""
        with self._cond:
            if self._stopping or id(series) in self._queue:
                return False
            series.snapshot_queued = True
            self._queue[id(series)] = series
            self._cond.notify()
            return True

    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + self._busy

    def wait_idle(self, timeout: float) -> bool:
        """Wait (bounded) until every queued snapshot has been written or skipped."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def close(self, timeout: float) -> int:
        """Write what is queued within ``timeout`` seconds, drop the rest, stop the thread.
        Returns the number of requests dropped (they replay from the database)."""
        with self._cond:
            self._hurry = True
            self._cond.notify_all()
        self.wait_idle(timeout)
        with self._cond:
            self._stopping = True
            dropped = list(self._queue.values())
            self._queue.clear()
            for series in dropped:
                series.snapshot_queued = False
            self._cond.notify_all()
        # A write in flight finishes (a partial file would be useless); it cannot block.
        self._thread.join()
        return len(dropped)

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        pin_threads()
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping and not self._queue:
                    return
                _, series = self._queue.popitem(last=False)
                self._busy = True
            cpu = time.thread_time()
            try:
                self._write(series)
            except Exception:
                log.exception("series %r: snapshot failed", series.id)
            finally:
                with self._cond:
                    series.snapshot_queued = False
                    self._busy = False
                    self._cond.notify_all()
            self._pace(time.thread_time() - cpu)

    def _pace(self, spent: float) -> None:
        """Leave the GIL to others for as long as the last snapshot held it (see above)."""
        deadline = time.monotonic() + spent
        with self._cond:
            while not self._hurry and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)

    def _write(self, series: Snapshottable) -> None:
        captured = self._capture(series)
        if captured is None:
            return
        sid, incarnation, seq = captured.sid, captured.incarnation, captured.seq
        data = captured.state.to_bytes()
        del captured  # the state's copies can go before the file is written
        if self.before_write is not None:
            self.before_write(series)
        try:
            stored = self.store.save_bytes(series.id, sid, incarnation, seq, data)
        except StaleOwner as exc:
            log.warning("series %r: snapshot not written: %s", series.id, exc.detail)
            return
        if not stored:
            return
        self.written += 1
        if series.deleted or series.current_incarnation != incarnation:
            self.store.discard(incarnation)  # lost a race with a delete or reconfigure
            return
        with series.lock:
            if series.model_incarnation == incarnation and seq > series.snapshot_seq:
                series.snapshot_seq = seq
                series.snapshot_bytes = len(data)
                series.snapshot_at = time.monotonic()
        self.on_written(series, len(data))

    @staticmethod
    def _capture(series: Snapshottable) -> Captured | None:
        """Copy the model's state under the series' lock (the only time the writer holds it)."""
        with series.lock:
            model, incarnation, seq = series.model, series.model_incarnation, series.applied
            if model is None or incarnation is None or series.deleted:
                return None
            if seq <= series.snapshot_seq:
                return None
            return Captured(capture(model), series.sid, incarnation, seq)
