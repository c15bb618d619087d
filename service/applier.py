"""Applying committed observations to the series' models, on a pool of worker threads.

Durability and model work are decoupled. A push is acknowledged once its rows
have committed (`service.store`); the committer then hands the new observations
to the registry as a `Chunk`, which queues them here (`Applier.enqueue`), and a
worker thread applies them to the series' model. That keeps the acknowledgement
off the model's critical path: the ingest rate is bounded by the database's group
commits, not by ``learn_one``.

* **One writer per series.** A series has at most one drain task scheduled at a
  time, and every model access (learn, predict, snapshot) holds the series'
  lock. Chunks are applied strictly in sequence order; a chunk already covered
  (by a replay) is trimmed, and a gap (never expected) is filled from storage.
* **Reads interleave.** The worker releases the lock every ``apply_slice``
  observations, so reads on a busy series interleave with its ingestion, and a
  drain task yields its thread to other series after `_SLICES_PER_TASK` slices.
* **Acknowledgements first.** While pushes are in flight, a model waits
  (`Applier._defer_to_pushes`), within ``apply_max_lag`` and unless a read waits.
* **Snapshots off the apply path.** A model ``snapshot_every`` observations ahead of
  its snapshot is only *requested* from the snapshot writer (`service.snapshot_writer`).

Recovery: a model is restored from its newest valid snapshot, then every later
observation is replayed from storage, so its state equals the state with no crash.
The same happens after a failed apply: the model is dropped and the next drain
(scheduled by a read, a push or a reconfiguration) rebuilds it; reads waiting
on the failed drain get a 500, later reads the rebuilt model.

After each slice, a failure and a drain's end, the registry hears of it through
``notify(series, payloads)`` (from a worker thread), to wake the series' waiting reads
and send its streams the forecasts of a completed batch.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from episodic_koopman import EpisodicKoopman, pin_threads

from .metrics import Metrics
from .payloads import Payloads
from .series import Series
from .settings import Settings
from .snapshot_policy import SnapshotPolicy
from .snapshot_writer import SnapshotWriter
from .snapshots import SnapshotStore
from .store import Chunk, Reader, SeriesRecord, canonical_params
from .timestamps import TimeKey

log = logging.getLogger("episodic_koopman.service")

#: Slices a drain task applies before yielding its thread to other series.
_SLICES_PER_TASK = 32

#: Distinct parameter sets whose canonical form is kept (`Applier._canonical`).
_CANONICAL_CACHE = 256

#: Called from a worker thread after an apply: the series and its streams' new forecasts.
Notify = Callable[[Series, list[dict[str, Any]]], None]


class Applier:
    """Drains each series' pending chunks into its model; owns the apply backlog."""

    def __init__(
        self,
        settings: Settings,
        reader: Reader,
        snapshots: SnapshotStore,
        metrics: Metrics,
        payloads: Payloads,
        snapshot_policy: SnapshotPolicy,
        snapshot_writer: SnapshotWriter,
        notify: Notify,
    ) -> None:
        self.settings = settings
        self.reader = reader
        self.snapshots = snapshots
        self.metrics = metrics
        self.payloads = payloads
        self.snapshot_policy = snapshot_policy
        self.snapshot_writer = snapshot_writer
        self.notify = notify
        # OpenMP thread counts are per thread: FAISS must be pinned in every worker, or each
        # search wakes a thread team (10 ms instead of 50 us on 2 cores).
        self.pool = ThreadPoolExecutor(
            settings.apply_workers, thread_name_prefix="apply", initializer=pin_threads
        )
        self._backlog = 0
        self._backlog_lock = threading.Lock()
        self.restoring: set[str] = set()  # series restored in the background (preload)
        self.pushes_in_flight = 0  # changed on the event loop (the engine's push slots)
        self.readers_waiting = 0  # the same: reads waiting for their models (read-your-writes)
        self.closing = False
        self._canonical_params: dict[str, dict[str, Any]] = {}  # by the params' JSON text

    # ------------------------------------------------------------------ the backlog
    @property
    def backlog(self) -> int:
        """Acknowledged observations not applied yet (bounded by ``max_apply_backlog``)."""
        return self._backlog

    def _add_backlog(self, n: int) -> None:
        with self._backlog_lock:
            self._backlog += n
            self.metrics.backlog.set(self._backlog)

    def enqueue(self, series: Series, chunk: Chunk) -> None:
        """Queue committed observations for the series' model (the committer's thread)."""
        with series.pending_lock:
            series.pending.append(chunk)
        self._add_backlog(len(chunk.keys))
        self.schedule(series)

    def drop_pending(self, series: Series) -> None:
        """Forget the series' queued chunks (it is gone, or its model is rebuilt from storage)."""
        with series.pending_lock:
            dropped = sum(len(c.keys) for c in series.pending)
            series.pending.clear()
        if dropped:
            self._add_backlog(-dropped)

    # ------------------------------------------------------------------ scheduling
    def restore_soon(self, series: Series) -> None:
        """Restore the series' model in the background (counted in `restoring` until done)."""
        self.restoring.add(series.id)
        self.schedule(series)

    def schedule(self, series: Series) -> None:
        with series.pending_lock:
            if series.scheduled or self.closing:
                return
            series.scheduled = True
            # A failed series has no model: this drain rebuilds it from its snapshot and the
            # stored observations. Its outcome, not the old failure, is what reads see.
            series.failure = None
        self.pool.submit(self._drain, series)

    def close(self) -> None:
        """Stop scheduling, and wait for the running drains (queued ones are cancelled)."""
        self.closing = True
        self.pool.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------ applying
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
                        self.restore(series, record)
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
                # A waiting read goes only once the model has caught up: waking the loop after
                # every slice before then costs a GIL hand-off per slice for nothing.
                if payloads or (series.waiters and series.caught_up()):
                    self.notify(series, payloads)
        except Exception as exc:
            log.exception("series %r: applying observations failed", series.id)
            with series.lock:
                # The model may hold half a slice: drop it, so that the next drain (a read,
                # a push or a reconfiguration schedules one) replays from storage, which
                # holds the pending chunks too (and the backlog must not wait for them).
                series.model = None
                series.model_incarnation = None
                self.drop_pending(series)
            series.failure = f"{type(exc).__name__}: {exc}"
            self.notify(series, [])
        finally:
            self.restoring.discard(series.id)
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
                self.pool.submit(self._drain, series)
            elif series.waiters:
                self.notify(series, [])

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

    def restore(self, series: Series, record: SeriesRecord) -> None:
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
            if params != self._canonical(record) or candidate.n_observations != seq:
                log.warning("series %r: snapshot %d does not match; skipped", record.id, seq)
                self.snapshots.discard_invalid(record.incarnation, seq)
                continue
            model, applied = candidate, seq
            break
        if model is None:  # as stored: a parameter added since keeps the value it ran with
            model = EpisodicKoopman.from_flat(canonical_params(record.params))
        series.model = model
        series.model_incarnation = record.incarnation
        series.applied = applied
        series.snapshot_seq = applied
        series.snapshot_bytes = self.snapshots.size(record.incarnation, applied) if applied else 0
        series.snapshot_at = time.monotonic()
        series.applied_last_key = None
        if applied == record.count and record.last_key is not None:
            # A current snapshot: nothing to replay, and the record holds the newest key
            # (observations committed since come as pending chunks: `publish` queues them).
            series.applied_last_key = record.last_key
            return
        self._replay(series, record, until=None)
        if series.applied_last_key is None and series.applied:
            times = self.reader.times(record.sid, [series.applied - 1])
            series.applied_last_key = times.get(series.applied - 1)

    def _canonical(self, record: SeriesRecord) -> dict[str, Any]:
        """`canonical_params` of the record's parameters (read-only: shared). Most series
        share a few parameter sets, and each costs a model's construction."""
        text = json.dumps(record.params, sort_keys=True)
        params = self._canonical_params.get(text)
        if params is None:
            if len(self._canonical_params) >= _CANONICAL_CACHE:
                self._canonical_params.clear()
            params = self._canonical_params[text] = canonical_params(record.params)
        return params

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
