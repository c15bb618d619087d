"""Live models: one per series, applied asynchronously, read with read-your-writes.

Durability and model work are decoupled. A push is acknowledged once its rows
have committed (`service.store`); the committer then hands the new observations
to this registry as a `Chunk`, and a worker thread applies them to the series'
model. That keeps the acknowledgement off the model's critical path: the ingest
rate is bounded by SQLite group commits, not by ``learn_one``.

Consistency rules:

* **One writer per series.** A series has at most one drain task scheduled at a
  time, and every model access (learn, predict, snapshot) holds the series'
  lock. Chunks are applied strictly in sequence order; a chunk already covered
  (by a replay) is trimmed, and a gap (never expected) is filled from SQLite.
* **Read-your-writes.** A read first waits, on the event loop and without a
  thread, until the model has applied every observation acknowledged before the
  read arrived (503 with ``Retry-After`` after ``read_your_writes_timeout``).
* **Reads never stall the loop.** Predictions run in a small thread pool; the
  apply worker releases the lock every ``apply_slice`` observations so reads on a
  busy series interleave with its ingestion.
* **Streams.** After each applied batch, subscribers of the series get a
  forecast event (one per accepted batch, computed once per horizon and level).
* **Snapshots off the apply path.** Snapshots are requested (by the periodic
  policy check, by ``snapshot_every``, at shutdown) and written by the snapshot
  writer thread (`service.snapshot_writer`), which holds a series' lock only to
  copy its model's state: applies and reads never wait behind disk I/O.

Recovery: a model is restored from its newest valid snapshot, then every later
observation is replayed from SQLite, so its state equals the state with no crash.
The same happens after a failed apply: the model is dropped and the next drain
(scheduled by a read, a push or a reconfiguration) rebuilds it; reads waiting
on the failed drain get a 500, later reads the rebuilt model.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from episodic_koopman import EpisodicKoopman, pin_threads

from .errors import ApiError
from .metrics import Metrics
from .payloads import Payloads
from .settings import Settings
from .snapshot_policy import SnapshotPolicy
from .snapshot_writer import SnapshotWriter
from .snapshots import SnapshotStore, pin_mmap_threshold
from .store import Chunk, Effect, Reader, SeriesRecord, canonical_params
from .timestamps import TimeKey

log = logging.getLogger("episodic_koopman.service")

#: Forecasts up to this horizon are computed on the event loop when the series is free.
INLINE_HORIZON = 256
#: Slices a drain task applies before yielding its thread to other series.
_SLICES_PER_TASK = 32


class Subscriber:
    """One SSE client of a series: a small queue of forecast payloads (oldest dropped first)."""

    def __init__(self, horizon: int, level: float, maxsize: int = 16) -> None:
        self.horizon = horizon
        self.level = level
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize)

    def offer(self, payload: dict[str, Any] | None) -> None:
        """Called on the event loop. A slow client loses old forecasts, never the newest."""
        if self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(payload)


class Series:
    """Runtime state of one series: its committed record, model, pending chunks, listeners."""

    def __init__(self, record: SeriesRecord) -> None:
        self.record = record  # replaced (never mutated) by the committer's publications
        self.lock = threading.Lock()  # guards the model and everything applied to it
        self.model: EpisodicKoopman | None = None
        self.model_incarnation: str | None = None
        self.applied = 0
        self.applied_last_key: TimeKey | None = None
        # The model's newest written snapshot (kept by the snapshot writer and restores).
        self.snapshot_seq = 0
        self.snapshot_bytes = 0
        self.snapshot_at = time.monotonic()
        self.snapshot_queued = False  # a request waits in (or is being served by) the writer
        self.pending: deque[Chunk] = deque()
        self.pending_lock = threading.Lock()
        self.scheduled = False
        self.subscribers: set[Subscriber] = set()  # changed on the event loop only
        self.waiters: list[asyncio.Future[None]] = []  # event loop only
        self.deleted = False
        self.failure: str | None = None
        # Set while the series' drain waits for in-flight pushes (observable, e.g. by tests).
        self.deferring = threading.Event()

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def sid(self) -> int:
        return self.record.sid

    @property
    def current_incarnation(self) -> str:
        return self.record.incarnation

    def caught_up(self) -> bool:
        """Whether the model reflects every acknowledged observation."""
        record = self.record
        return (
            self.model is not None
            and self.model_incarnation == record.incarnation
            and self.applied >= record.count
        )


class Registry:
    """Every series' runtime state, the worker pools, and the committer's publisher."""

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
        self._sorted_ids: list[str] | None = None
        # OpenMP thread counts are per thread: FAISS must be pinned in every worker, or each
        # search wakes a thread team (10 ms instead of 50 us on 2 cores).
        self.apply_pool = ThreadPoolExecutor(
            settings.apply_workers, thread_name_prefix="apply", initializer=pin_threads
        )
        self.read_pool = ThreadPoolExecutor(
            settings.read_workers, thread_name_prefix="read", initializer=pin_threads
        )
        self._backlog = 0
        self._backlog_lock = threading.Lock()
        self._restoring: set[str] = set()
        self.streams = 0
        self.pushes_in_flight = 0  # changed on the event loop; read by apply workers
        self.readers_waiting = 0  # the same: reads waiting for their models (read-your-writes)
        self.closing = False
        self.metrics.series.set(len(self.catalog))
        # Snapshots of incarnations that no longer exist (deleted or reconfigured series).
        live = {s.record.incarnation for s in self.catalog.values()}
        for incarnation in snapshots.incarnations() - live:
            snapshots.discard(incarnation)

    # ------------------------------------------------------------------ bookkeeping
    @property
    def backlog(self) -> int:
        return self._backlog

    def _add_backlog(self, n: int) -> None:
        with self._backlog_lock:
            self._backlog += n
            self.metrics.backlog.set(self._backlog)

    @property
    def preloading(self) -> int:
        return len(self._restoring)

    def preload(self) -> None:
        """Restore every model with observations in the background (snapshot + replay)."""
        for series in list(self.catalog.values()):
            if series.record.count:
                self._restoring.add(series.id)
                self.schedule(series)

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
                            self.schedule(series)
            elif effect.kind == "append":
                assert series is not None and effect.chunk is not None
                with series.pending_lock:
                    series.pending.append(effect.chunk)
                self._add_backlog(len(effect.chunk.keys))
                self.schedule(series)

    def _retire(self, series: Series) -> None:
        series.deleted = True
        self._sorted_ids = None
        self.metrics.series.set(len(self.catalog))
        self.snapshots.discard(series.record.incarnation)
        with series.pending_lock:
            dropped = sum(len(c.keys) for c in series.pending)
            series.pending.clear()
        if dropped:
            self._add_backlog(-dropped)
        self.loop.call_soon_threadsafe(self._wake, series)

    # ------------------------------------------------------------------ applying
    def schedule(self, series: Series) -> None:
        with series.pending_lock:
            if series.scheduled or self.closing:
                return
            series.scheduled = True
            # A failed series has no model: this drain rebuilds it from its snapshot and the
            # stored observations. Its outcome, not the old failure, is what reads see.
            series.failure = None
        self.apply_pool.submit(self._drain, series)

    def _drain(self, series: Series) -> None:
        """Apply a series' pending chunks in order (at most one such task per series)."""
        try:
            for _ in range(_SLICES_PER_TASK):
                if self.closing:
                    break
                self._defer_to_pushes(series)
                payloads: list[dict[str, Any]] = []
                with series.lock:
                    if series.deleted:
                        series.model = None
                        break
                    record = series.record
                    if series.model is None or series.model_incarnation != record.incarnation:
                        self._restore(series, record)
                    step = self._next_slice(series)
                    if step is None:
                        break
                    start, values, keys, batch_end = step
                    if start > series.applied:  # a gap: fill it from the database
                        self._replay(series, record, until=start)
                        continue
                    self._learn(series.model, record, values)
                    series.applied = start + values.shape[0]
                    series.applied_last_key = keys[-1]
                    self.metrics.applied.inc(values.shape[0])
                    if batch_end and series.subscribers:
                        payloads = self.payloads.stream(series)
                    if not series.snapshot_queued and self.snapshot_policy.overdue(
                        series.applied - series.snapshot_seq
                    ):
                        self.snapshot_writer.request(series)
                self._after_apply(series, payloads)
        except Exception as exc:
            log.exception("series %r: applying observations failed", series.id)
            with series.lock:
                # The model may hold half a slice: drop it, so that the next drain (a read,
                # a push or a reconfiguration schedules one) replays from storage, which
                # holds the pending chunks too (and the backlog must not wait for them).
                series.model = None
                series.model_incarnation = None
                with series.pending_lock:
                    dropped = sum(len(c.keys) for c in series.pending)
                    series.pending.clear()
                if dropped:
                    self._add_backlog(-dropped)
            series.failure = f"{type(exc).__name__}: {exc}"
            self.loop.call_soon_threadsafe(self._wake, series)
        finally:
            self._restoring.discard(series.id)
            with series.pending_lock:
                # More work: chunks left (fairness cut the loop short) or a reconfiguration
                # that landed meanwhile. New chunks schedule themselves (same lock).
                again = (
                    not self.closing
                    and not series.deleted
                    and series.failure is None
                    and (
                        bool(series.pending)
                        or series.model_incarnation != series.record.incarnation
                    )
                )
                if not again:
                    series.scheduled = False
            if again:
                self.apply_pool.submit(self._drain, series)
            elif series.waiters:
                self.loop.call_soon_threadsafe(self._wake, series)

    def _defer_to_pushes(self, series: Series) -> None:
        """Give the GIL to in-flight pushes: durable acknowledgements come first.

        In one process the GIL lets either pushes or ``learn_one`` run; the acknowledgement
        rate drops threefold when they interleave. A series' model waits while pushes are in
        flight, unless a read waits for a model (read-your-writes: the worker may stand
        between that read and its series) or its oldest unapplied observation is older than
        ``apply_max_lag``. Sustained ingestion beyond what models
        can apply ends in 503s from ``max_apply_backlog``, never in unbounded lag.
        """
        max_lag = self.settings.apply_max_lag
        try:
            while self.pushes_in_flight and not self.readers_waiting and not self.closing:
                with series.pending_lock:
                    oldest = series.pending[0].committed_at if series.pending else None
                if oldest is None or time.monotonic() - oldest >= max_lag:
                    return
                series.deferring.set()
                time.sleep(self.settings.apply_defer_seconds)
        finally:
            series.deferring.clear()

    def _next_slice(self, series: Series) -> tuple[int, np.ndarray, list[TimeKey], bool] | None:
        """The next observations to apply: ``(start, values, keys, ends_a_batch)`` or None."""
        with series.pending_lock:
            while series.pending and series.pending[0].end <= series.applied:
                done = series.pending.popleft()  # already covered by a replay
                self._add_backlog(-len(done.keys))
            if not series.pending:
                return None
            chunk = series.pending[0]
            if chunk.start > series.applied:
                return chunk.start, chunk.values[:0], [], False
            offset = series.applied - chunk.start
            n = min(self.settings.apply_slice, chunk.values.shape[0] - offset)
            batch_end = offset + n == chunk.values.shape[0]
            if batch_end:
                series.pending.popleft()
                self._add_backlog(-len(chunk.keys))
            return (
                series.applied,
                chunk.values[offset : offset + n],
                chunk.keys[offset : offset + n],
                batch_end,
            )

    @staticmethod
    def _learn(model: EpisodicKoopman | None, record: SeriesRecord, values: np.ndarray) -> None:
        assert model is not None
        if record.channels is None:
            model.learn_many(values[:, 0])
        else:
            model.learn_many({name: values[:, j] for j, name in enumerate(record.channels)})

    def _restore(self, series: Series, record: SeriesRecord) -> None:
        """Newest valid snapshot of this incarnation, then replay the rest (lock held)."""
        model, applied = None, 0
        for seq in self.snapshots.candidates(record.incarnation, record.count + 10**9):
            try:
                candidate = self.snapshots.load(record.incarnation, seq)
            except Exception:
                log.exception("series %r: snapshot %d is unreadable; skipped", record.id, seq)
                self.snapshots.discard_invalid(record.incarnation, seq)
                continue
            params = json.loads(json.dumps(candidate.to_flat()))
            if params != canonical_params(record.params) or candidate.n_observations != seq:
                log.warning("series %r: snapshot %d does not match; skipped", record.id, seq)
                self.snapshots.discard_invalid(record.incarnation, seq)
                continue
            model, applied = candidate, seq
            break
        series.model = model if model is not None else EpisodicKoopman.from_flat(record.params)
        series.model_incarnation = record.incarnation
        series.applied = applied
        series.snapshot_seq = applied
        series.snapshot_bytes = self.snapshots.size(record.incarnation, applied) if applied else 0
        series.snapshot_at = time.monotonic()
        series.applied_last_key = None
        self._replay(series, record, until=None)
        if series.applied_last_key is None and series.applied:
            times = self.reader.times(record.sid, [series.applied - 1])
            series.applied_last_key = times.get(series.applied - 1)

    def _replay(self, series: Series, record: SeriesRecord, until: int | None) -> None:
        """Apply stored observations from ``series.applied`` (up to ``until``) (lock held)."""
        for values, keys in self.reader.observation_blocks(record.sid, series.applied):
            if until is not None:
                take = until - series.applied
                if take <= 0:
                    break
                values, keys = values[:take], keys[:take]
            self._learn(series.model, record, values)
            series.applied += values.shape[0]
            series.applied_last_key = keys[-1]
            self.metrics.replayed.inc(values.shape[0])

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
        self.closing = True
        self.apply_pool.shutdown(wait=True, cancel_futures=True)
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

    def _after_apply(self, series: Series, payloads: list[dict[str, Any]]) -> None:
        if series.waiters or payloads:
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
        self.readers_waiting += 1
        try:
            self.schedule(series)  # a model not restored yet (no preload) is restored now
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
            self.readers_waiting -= 1
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
                self._restore(series, series.record)
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
