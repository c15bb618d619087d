"""Live models: one per series, applied asynchronously, read with read-your-writes.

The registry holds every series' runtime state (`service.series.Series`), takes the
committer's publications, and serves reads. Applying observations to the models is
the `service.applier.Applier`'s: the committer's chunks are queued there, and worker
threads apply them, so acknowledgements never wait for ``learn_one``.

Consistency rules:

* **Read-your-writes.** A read first waits, on the event loop and without a
  thread, until the model has applied every observation acknowledged before the
  read arrived (503 with ``Retry-After`` after ``read_your_writes_timeout``).
* **Reads never stall the loop.** Predictions run in a small thread pool (a small
  one runs inline when the series is free); the apply worker releases the series'
  lock every ``apply_slice`` observations, so reads interleave with its ingestion.
* **Streams.** After each applied batch, subscribers of the series get a
  forecast event (one per accepted batch, computed once per horizon and level).
* **Snapshots off the apply path.** Snapshots are requested (by the periodic
  policy check, by ``snapshot_every``, at shutdown) and written by the snapshot
  writer thread (`service.snapshot_writer`), which holds a series' lock only to
  copy its model's state: applies and reads never wait behind disk I/O.

A read of a series whose apply failed gets a 500; the next drain (which the read
schedules) rebuilds the model from its snapshot and storage (`service.applier`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from episodic_koopman import pin_threads

from .applier import Applier
from .errors import ApiError
from .metrics import Metrics
from .payloads import Payloads
from .series import Series, Subscriber
from .settings import Settings
from .snapshot_policy import SnapshotPolicy
from .snapshot_writer import SnapshotWriter
from .snapshots import SnapshotStore, pin_mmap_threshold
from .store import Effect, Reader, SeriesRecord

log = logging.getLogger("episodic_koopman.service")

#: Forecasts up to this horizon are computed on the event loop when the series is free.
INLINE_HORIZON = 256


class Registry:
    """Every series' runtime state, its publisher (the committer's), reads and streams."""

    def __init__(
        self,
        settings: Settings,
        records: dict[str, SeriesRecord],
        reader: Reader,
        snapshots: SnapshotStore,
        metrics: Metrics,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.settings = settings
        self.reader = reader
        self.snapshots = snapshots
        self.metrics = metrics
        self.payloads = Payloads(metrics, reader)
        self.loop = loop
        self.catalog: dict[str, Series] = {sid: Series(rec) for sid, rec in records.items()}
        pin_mmap_threshold(settings.mmap_threshold_bytes)
        self.snapshot_policy = SnapshotPolicy(
            settings.snapshot_bytes_per_observation,
            settings.snapshot_every,
            settings.snapshot_max_age_seconds,
        )
        self.snapshot_writer = SnapshotWriter(snapshots, self._snapshot_written)
        self.applier = Applier(
            settings,
            reader,
            snapshots,
            metrics,
            self.payloads,
            self.snapshot_policy,
            self.snapshot_writer,
            self._notify,
        )
        self._sorted_ids: list[str] | None = None
        # Pinned like the apply workers (`service.applier`): FAISS's OpenMP pool is per thread.
        self.read_pool = ThreadPoolExecutor(
            settings.read_workers, thread_name_prefix="read", initializer=pin_threads
        )
        self.streams = 0
        self.metrics.series.set(len(self.catalog))
        # Snapshots of incarnations that no longer exist (deleted or reconfigured series).
        live = {s.record.incarnation for s in self.catalog.values()}
        for incarnation in snapshots.incarnations() - live:
            snapshots.discard(incarnation)

    # ------------------------------------------------------------------ bookkeeping
    @property
    def backlog(self) -> int:
        return self.applier.backlog

    @property
    def preloading(self) -> int:
        return len(self.applier.restoring)

    def preload(self) -> None:
        """Restore every model with observations in the background (snapshot + replay)."""
        for series in list(self.catalog.values()):
            if series.record.count:
                self.applier.restore_soon(series)

    def sorted_ids(self) -> list[str]:
        ids = self._sorted_ids
        if ids is None:
            ids = self._sorted_ids = sorted(list(self.catalog))
        return ids

    def get(self, series_id: str) -> Series:
        series = self.catalog.get(series_id)
        if series is None:
            raise ApiError(404, f"series {series_id!r} does not exist")
        return series

    # ------------------------------------------------------------------ publication (committer)
    def publish(self, effects: list[Effect]) -> None:
        """Apply committed effects (runs on the committer thread, before the acks)."""
        for effect in effects:
            if effect.kind == "delete":
                series = self.catalog.pop(effect.series_id, None)
                if series is not None:
                    self._retire(series)
                continue
            record = effect.record
            assert record is not None
            series = self.catalog.get(effect.series_id)
            if effect.kind == "upsert":
                if series is None or series.record.sid != record.sid:
                    if series is not None:
                        self._retire(series)
                    self.catalog[record.id] = Series(record)
                    self._sorted_ids = None
                    self.metrics.series.set(len(self.catalog))
                else:
                    previous = series.record.incarnation
                    series.record = record
                    if record.incarnation != previous:
                        # Reconfigured: the model is rebuilt from every stored observation.
                        self.snapshots.discard(previous)
                        if record.count:
                            self.applier.schedule(series)
            elif effect.kind == "append":
                assert series is not None and effect.chunk is not None
                self.applier.enqueue(series, effect.chunk)

    def _retire(self, series: Series) -> None:
        series.deleted = True
        self._sorted_ids = None
        self.metrics.series.set(len(self.catalog))
        self.snapshots.discard(series.record.incarnation)
        self.applier.drop_pending(series)
        self.loop.call_soon_threadsafe(self._wake, series)

    # ------------------------------------------------------------------ snapshots
    def _snapshot_written(self, series: Series, size: int) -> None:
        self.metrics.snapshots.inc()

    def snapshot_dirty(self) -> int:
        """Request a snapshot of every changed model the policy says is due (periodic task)."""
        queued = 0
        now = time.monotonic()
        policy = self.snapshot_policy
        for series in list(self.catalog.values()):
            if series.model is None or series.snapshot_queued:
                continue
            new = series.applied - series.snapshot_seq
            if policy.due(new, series.snapshot_bytes, now - series.snapshot_at):
                queued += self.snapshot_writer.request(series)
        return queued

    def wait_for_snapshots(self, timeout: float) -> bool:
        """Wait (bounded) until the writer has written every requested snapshot."""
        return self.snapshot_writer.wait_idle(timeout)

    def close(self) -> None:
        """Within the shutdown budget: finish the backlog, then snapshot every changed model,
        furthest ahead of its snapshot first. Whatever is left over replays from SQLite at
        the next start."""
        deadline = time.monotonic() + self.settings.shutdown_snapshot_seconds
        while self.backlog > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.applier.close()
        self.read_pool.shutdown(wait=True, cancel_futures=True)
        dirty = sorted(
            (s for s in self.catalog.values() if s.model is not None),
            key=lambda s: s.applied - s.snapshot_seq,
            reverse=True,
        )
        for series in dirty:
            if series.applied > series.snapshot_seq and time.monotonic() < deadline:
                self.snapshot_writer.request(series)
        before = self.snapshot_writer.written
        dropped = self.snapshot_writer.close(max(deadline - time.monotonic(), 0.0))
        written = self.snapshot_writer.written - before
        self.snapshots.close()
        log.info(
            "shutdown: %d snapshots written, %d dropped; the rest replays from the database",
            written,
            dropped,
        )

    # ------------------------------------------------------------------ reads
    def _wake(self, series: Series) -> None:
        """Release waiters whose condition holds (event loop)."""
        for waiter in series.waiters:
            if not waiter.done() and (series.caught_up() or series.deleted or series.failure):
                waiter.set_result(None)
        if series.deleted:
            for subscriber in list(series.subscribers):
                subscriber.offer(None)

    def _notify(self, series: Series, payloads: list[dict[str, Any]]) -> None:
        """The applier's news (a worker thread): handed to the event loop."""
        self.loop.call_soon_threadsafe(self._deliver, series, payloads)

    def _deliver(self, series: Series, payloads: list[dict[str, Any]]) -> None:
        self._wake(series)
        by_key = {(p["horizon"], p["level"]): p for p in payloads}
        for subscriber in list(series.subscribers):
            payload = by_key.get((subscriber.horizon, subscriber.level))
            if payload is not None:
                subscriber.offer(payload)

    async def caught_up(self, series: Series) -> None:
        """Wait until the model has applied everything acknowledged so far (read-your-writes)."""
        if series.caught_up():
            return
        waiter: asyncio.Future[None] = self.loop.create_future()
        series.waiters.append(waiter)
        self.applier.readers_waiting += 1
        try:
            self.applier.schedule(series)  # a model not restored yet (no preload) is restored now
            if series.caught_up():  # the worker may have finished before the waiter existed
                return
            try:
                await asyncio.wait_for(waiter, self.settings.read_your_writes_timeout)
            except TimeoutError:
                raise ApiError(
                    503,
                    f"series {series.id!r} is still applying acknowledged observations "
                    f"(applied {series.applied} of {series.record.count}); retry",
                    headers={"Retry-After": "1"},
                ) from None
        finally:
            series.waiters.remove(waiter)
            self.applier.readers_waiting -= 1
        self._check_usable(series)

    def _check_usable(self, series: Series) -> None:
        if series.deleted:
            raise ApiError(404, f"series {series.id!r} does not exist")
        if series.failure:
            raise ApiError(500, f"series {series.id!r} cannot apply its observations")

    async def read(self, series: Series, fn: Any, *args: Any, small: bool = False) -> Any:
        """Run ``fn(series, *args)`` under the series' lock after catching up.

        ``small`` work (a forecast of a modest horizon: a few hundred microseconds) runs
        right here when the lock is free, which saves two thread hand-offs; anything
        else, or a series whose lock a worker holds, goes to the read pool.
        """
        await self.caught_up(series)
        self._check_usable(series)
        if small and series.lock.acquire(blocking=False):
            try:
                if (
                    series.model is not None
                    and series.model_incarnation == series.record.incarnation
                ):
                    return fn(series, *args)
            finally:
                series.lock.release()
        return await self.loop.run_in_executor(self.read_pool, self._locked, series, fn, args)

    def _locked(self, series: Series, fn: Any, args: tuple[Any, ...]) -> Any:
        with series.lock:
            if series.model is None or series.model_incarnation != series.record.incarnation:
                self.applier.restore(series, series.record)
            return fn(series, *args)

    def open_stream(self, series: Series, subscriber: Subscriber) -> None:
        """Register an SSE client (event loop)."""
        series.subscribers.add(subscriber)
        self.streams += 1
        self.metrics.streams.set(self.streams)
        if series.deleted:
            subscriber.offer(None)

    def close_stream(self, series: Series, subscriber: Subscriber) -> None:
        series.subscribers.discard(subscriber)
        self.streams -= 1
        self.metrics.streams.set(self.streams)
