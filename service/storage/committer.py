"""The committer: the one thread that applies every write, in group commits, on any backend.

Observations are the source of truth: append-only, and a push is acknowledged only
after its transaction has committed. All writes go through one `Committer`, which gives:

* one writer per series (in fact one writer per process), so concurrent pushes to
  the same series are serialised and none is lost;
* group commit: every command queued while the previous commit was syncing is
  applied in one transaction (each in its own savepoint, so a rejected push does
  not affect the others), which amortises the sync over many requests;
* idempotency on ``(series, t)``, decided against the committed state: an
  identical re-send is a duplicate, the same ``t`` with another ``y`` and a ``t``
  older than the series' last one (and never stored) are 409s (the commands' rules
  are `service.storage.group_writes`);
* fencing: each transaction first reads the epochs of the shards its commands
  touch (`WriteSession.shard_epochs`); a command whose shard another writer has
  acquired since fails with `StaleOwner` and writes nothing.

Once a transaction commits, the committer publishes its effects to the model
registry (new records, observation chunks to apply) and only then resolves the
requests' futures, so an acknowledged observation is always visible to reads.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from ..errors import ApiError
from .base import StaleOwner, WriteSession
from .group_writes import GroupWrites
from .records import Command, Publisher, Queued, SeriesRecord, shard_of

log = logging.getLogger("episodic_koopman.service")

#: Commands folded into one transaction at most.
MAX_GROUP = 512

_STOP = object()


class Committer:
    """The single writer: a thread that applies queued commands in group commits."""

    def __init__(
        self,
        session: WriteSession,
        records: dict[str, SeriesRecord],
        publisher: Publisher,
        max_series: int,
        model_defaults: dict[str, Any] | None = None,
        *,
        epochs: dict[int, int],
        n_shards: int,
        commit_spacing: float = 0.0,
        in_flight: Callable[[], int] | None = None,
    ) -> None:
        self.session = session
        self.model_defaults = dict(model_defaults or {})
        self.records = dict(records)  # committer-thread state: the committed records
        self.publisher = publisher
        self.max_series = max_series
        self.epochs = dict(epochs)  # shard -> the ownership epoch this writer holds
        self.n_shards = n_shards
        # Under load, a group commit starts at least this long after the previous one
        # started: the pushes that arrive meanwhile share its sync (each sync writes at
        # least a whole disk block, however little changed). See `_worth_waiting`.
        self.commit_spacing = commit_spacing
        self.in_flight = in_flight  # pushes admitted and not yet answered (the server's)
        self._last_commit = -float("inf")
        self._last_group = 0
        self._queue: queue.SimpleQueue[Queued | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="committer", daemon=True)
        self.commits = 0
        self.failed = False

    def start(self) -> None:
        self._thread.start()
        self.session.start()

    def submit(self, command: Command) -> Future:
        future: Future = Future()
        if self.failed or not self._thread.is_alive():
            future.set_exception(ApiError(503, "storage is unavailable"))
        else:
            self._queue.put(Queued(command, future))
        return future

    def stop(self) -> None:
        """Finish every queued command, then stop."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        self.session.close()

    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive() and not self.failed

    # -- the thread ------------------------------------------------------------------
    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            group: list[Queued] = []
            item: Queued | object = first
            gather_until = self._last_commit + self.commit_spacing
            while True:
                if item is _STOP:
                    stopping = True
                else:
                    assert isinstance(item, Queued)
                    group.append(item)
                if len(group) >= MAX_GROUP:
                    break
                try:
                    wait = gather_until - time.monotonic()
                    if wait > 0 and not stopping and self._worth_waiting(len(group)):
                        item = self._queue.get(timeout=wait)
                    else:
                        item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if group:
                self._last_commit = time.monotonic()
                self._last_group = len(group)
                if self.failed:
                    for queued in group:
                        queued.future.set_exception(ApiError(503, "storage is unavailable"))
                else:
                    self._commit(group)

    def _worth_waiting(self, gathered: int) -> bool:
        """Whether more pushes are likely within the spacing (else commit at once).

        Without a count of the server's pushes in flight, always. With one: if pushes
        other than the gathered ones are in flight, or the previous group had several
        (concurrent clients), but not for one client pushing serially, which would
        otherwise be held to one push per spacing.
        """
        if self.in_flight is None:
            return True
        return self.in_flight() > gathered or self._last_group > 1

    def _commit(self, group: list[Queued]) -> None:
        writes = GroupWrites(self.session, self.records, self.max_series, self.model_defaults)
        outcomes: list[tuple[Queued, Any, BaseException | None]] = []
        session = self.session
        committing = False
        try:
            session.begin()
            shards = {shard_of(q.command.series_id, self.n_shards) for q in group}
            current = session.shard_epochs(shards)
            for queued in group:
                session.savepoint()
                try:
                    shard = shard_of(queued.command.series_id, self.n_shards)
                    held = self.epochs.get(shard)
                    if held is None or current.get(shard) != held:
                        raise StaleOwner(shard, held, current.get(shard))
                    result = writes.apply(queued.command, queued.effects)
                except BaseException as exc:
                    session.rollback_savepoint()
                    queued.effects.clear()
                    if isinstance(exc, StaleOwner):
                        log.warning("write to %r refused: %s", queued.command.series_id, exc)
                    elif not isinstance(exc, ApiError):
                        log.exception("command failed: %r", queued.command)
                        exc = ApiError(500, "internal error while storing")
                    outcomes.append((queued, None, exc))
                else:
                    session.release_savepoint()
                    outcomes.append((queued, result, None))
            committing = True
            session.commit()
        except session.errors as exc:
            log.exception("commit failed; %d commands are rejected", len(group))
            try:
                session.rollback()
            except session.errors:
                pass
            if committing and not session.healthy():
                # The connection broke during COMMIT: whether it committed is unknown, so the
                # in-memory records cannot be trusted. Stop writing; a restart reloads them.
                log.error("the outcome of a commit is unknown; the committer stops")
                self.failed = True
            for queued in group:
                if not queued.future.done():
                    queued.future.set_exception(ApiError(503, f"storage error: {exc}"))
            # The in-memory records were never touched (``writes`` is dropped), so they
            # still describe the database.
            return
        self.commits += 1
        for series_id, record in writes.work.items():
            if record is None:
                self.records.pop(series_id, None)
            else:
                self.records[series_id] = record
        effects = [
            effect for queued, _, error in outcomes if error is None for effect in queued.effects
        ]
        try:
            self.publisher.publish(effects)
        finally:
            for queued, result, error in outcomes:
                if error is not None:
                    queued.future.set_exception(error)
                else:
                    queued.future.set_result(result)
