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
  older than the series' last one (and never stored) are 409s;
* fencing: each transaction first reads the epochs of the shards its commands
  touch (`WriteSession.shard_epochs`); a command whose shard another writer has
  acquired since fails with `StaleOwner` and writes nothing.

Once a transaction commits, the committer publishes its effects to the model
registry (new records, observation chunks to apply) and only then resolves the
requests' futures, so an acknowledged observation is always visible to reads.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace
from typing import Any

import numpy as np

from episodic_koopman import EpisodicKoopman
from episodic_koopman.auto_embedding import final_delays
from episodic_koopman.forecaster import MAX_FEATURES

from ..errors import ApiError, invalid
from ..ingest import ParsedBatch
from ..timestamps import Spacing, TimeKey, render_t, same_gap
from .base import StaleOwner, WriteSession
from .records import (
    Chunk,
    Command,
    Configure,
    ConfigureOutcome,
    Effect,
    Ingest,
    IngestOutcome,
    Publisher,
    Queued,
    SeriesRecord,
    shard_of,
)

log = logging.getLogger("episodic_koopman.service")

#: Commands folded into one transaction at most.
MAX_GROUP = 512

_STOP = object()


def full_params(given: dict[str, Any]) -> dict[str, Any]:
    """Every constructor parameter with defaults filled in (the library validates them).

    Storing all of them freezes a series' configuration: a later change of the
    library's defaults cannot make replay diverge from what was acknowledged.
    """
    try:
        model = EpisodicKoopman.from_flat(given)
    except (TypeError, ValueError) as exc:
        message = str(exc)
        name = next(
            (p for p in sorted(given, key=len, reverse=True) if message.startswith(p)), None
        )
        loc = ["body", "params", name] if name else ["body", "params"]
        raise invalid(loc, message) from None
    return json.loads(json.dumps(model.to_flat()))


def canonical_params(params: dict[str, Any]) -> dict[str, Any]:
    """Stored flat parameters as this library writes them (old names and aliases mapped).

    A series stored by an older version may say ``missing="raise"``; the model it
    describes is the same one.
    """
    return json.loads(json.dumps(EpisodicKoopman.from_flat(params).to_flat()))


def check_layout(params: dict[str, Any], first: float | dict[str, float]) -> None:
    """Reject a channel count the model cannot hold (before anything is stored)."""
    n_channels = len(first) if isinstance(first, dict) else 1
    # No delays: an automatic embedding, which must hold its last (largest) stage.
    delays = params["delays"] if params["delays"] is not None else final_delays()
    n_features = delays * n_channels
    if params["lifting"] == "rff":
        n_features += params["n_components"]
    if n_features > MAX_FEATURES:
        raise invalid(
            ["body", "observations", 0, "y"],
            f"delays x channels (+ lifted features) = {n_features} exceeds {MAX_FEATURES}",
        )


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
        work: dict[str, SeriesRecord | None] = {}
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
                    result = self._apply(queued, work)
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
            # The in-memory records were never touched (``work`` is dropped), so they
            # still describe the database.
            return
        self.commits += 1
        for series_id, record in work.items():
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

    # -- commands (inside the transaction; ``work`` holds this group's new records) ------
    def _current(self, series_id: str, work: dict[str, SeriesRecord | None]) -> SeriesRecord | None:
        if series_id in work:
            return work[series_id]
        return self.records.get(series_id)

    def _n_series(self, work: dict[str, SeriesRecord | None]) -> int:
        n = len(self.records)
        for series_id, record in work.items():
            if record is None and series_id in self.records:
                n -= 1
            elif record is not None and series_id not in self.records:
                n += 1
        return n

    def _apply(self, queued: Queued, work: dict[str, SeriesRecord | None]) -> Any:
        command = queued.command
        if isinstance(command, Ingest):
            return self._ingest(command, work, queued.effects)
        if isinstance(command, Configure):
            return self._configure(command, work, queued.effects)
        return self._delete(command.series_id, work, queued.effects)

    def _create(self, series_id: str, params: dict[str, Any], work) -> SeriesRecord:
        if self._n_series(work) >= self.max_series:
            raise ApiError(
                403,
                f"the server holds its maximum of {self.max_series} series "
                "(EPISODIC_KOOPMAN_MAX_SERIES); delete one first",
            )
        created_at = time.time()
        incarnation = uuid.uuid4().hex
        sid = self.session.insert_series(series_id, incarnation, json.dumps(params), created_at)
        return SeriesRecord(
            sid=sid,
            id=series_id,
            incarnation=incarnation,
            params=params,
            channels=None,
            time_kind=None,
            count=0,
            last_key=None,
            tz=None,
            spacing=Spacing(),
            created_at=created_at,
        )

    def _configure(self, command: Configure, work, effects: list[Effect]) -> ConfigureOutcome:
        params = full_params({**self.model_defaults, **command.params})
        record = self._current(command.series_id, work)
        if record is None:
            record = self._create(command.series_id, params, work)
            work[command.series_id] = record
            effects.append(Effect("upsert", record.id, record))
            return ConfigureOutcome(record, created=True, changed=True)
        if canonical_params(record.params) == params:
            return ConfigureOutcome(record, created=False, changed=False)
        if record.count:
            first = 1.0 if record.channels is None else dict.fromkeys(record.channels, 1.0)
            try:
                check_layout(params, first)
            except ApiError:
                raise invalid(
                    ["body", "params"],
                    f"these parameters cannot hold the series' {record.n_channels} channels",
                ) from None
        # A new incarnation: the registry rebuilds the model by replaying every observation.
        record = replace(record, params=params, incarnation=uuid.uuid4().hex)
        self.session.update_params(record.sid, json.dumps(params), record.incarnation)
        work[command.series_id] = record
        effects.append(Effect("upsert", record.id, record))
        return ConfigureOutcome(record, created=False, changed=True)

    def _delete(self, series_id: str, work, effects: list[Effect]) -> bool:
        record = self._current(series_id, work)
        if record is None:
            return False
        self.session.delete_series(record.sid)
        work[series_id] = None
        effects.append(Effect("delete", record.id, record))
        return True

    def _ingest(self, command: Ingest, work, effects: list[Effect]) -> IngestOutcome:
        batch = command.batch
        record = self._current(command.series_id, work)
        created = record is None
        if record is None:
            params = full_params(dict(self.model_defaults))
            check_layout(params, batch.values[0])
            record = self._create(command.series_id, params, work)
        kind = batch.stamps[0].kind
        if record.time_kind is not None and kind != record.time_kind:
            raise invalid(
                ["body", "observations", 0, "t"],
                f"this series uses {record.time_kind} timestamps, got {kind}",
            )
        values = self._values(record, batch)
        channels = record.channels
        if record.count == 0 and isinstance(batch.values[0], dict):
            channels = tuple(batch.values[0])

        # Walk the batch in order against the committed state: new, duplicate or conflict.
        last, tz = record.last_key, record.tz
        step, run = record.spacing.step, record.spacing.run
        new_rows: list[int] = []
        new_keys: dict[TimeKey, int] = {}
        duplicates = 0
        stored_rows: dict[TimeKey, bytes] | None = None
        for i, stamp in enumerate(batch.stamps):
            key = stamp.key
            if last is None or key > last:
                if last is not None:  # the spacing, inline (this loop is the ingest hot path)
                    gap = key - last
                    if step is not None and same_gap(gap, step):
                        run += 1
                    else:
                        step, run = gap, 1
                last, tz = key, stamp.tz
                new_keys[key] = len(new_rows)
                new_rows.append(i)
                continue
            where = f"observations[{i}]"
            shown = render_t(kind, key, stamp.tz)
            if key in new_keys:
                stored = values[new_rows[new_keys[key]]]
            else:
                committed = record.last_key
                if stored_rows is None and committed is not None and key <= committed:
                    # One range query for every re-sent t of this request (retries re-send runs).
                    old = [s.key for s in batch.stamps if s.key <= committed]
                    stored_rows = self.session.stored_values(
                        record.sid, record.count, min(old), max(old)
                    )
                row = stored_rows.get(key) if stored_rows is not None else None
                if row is None:
                    raise ApiError(
                        409,
                        f"{where}: t={shown} is older than the series' last t="
                        f"{render_t(kind, last, tz)} and was never stored; "
                        "observations must arrive in time order",
                    )
                stored = np.frombuffer(row, dtype=np.float64)
            if not np.array_equal(stored, values[i]):
                raise ApiError(409, f"{where}: t={shown} is already stored with a different y")
            duplicates += 1

        spacing = Spacing(step, run)
        if new_rows:
            start = record.count
            accepted = values if len(new_rows) == len(values) else values[new_rows]
            keys = [batch.stamps[i].key for i in new_rows]
            record = replace(
                record,
                channels=channels,
                time_kind=kind,
                count=start + len(new_rows),
                last_key=last,
                tz=tz,
                spacing=spacing,
            )
            self.session.append_chunk(record, start, keys, accepted)
            effects.append(Effect("upsert", record.id, record))
            effects.append(Effect("append", record.id, record, Chunk(start, accepted, keys)))
        elif created:
            effects.append(Effect("upsert", record.id, record))
        work[command.series_id] = record
        return IngestOutcome(len(new_rows), duplicates, record)

    def _values(self, record: SeriesRecord, batch: ParsedBatch) -> np.ndarray:
        """The batch as ``(n, c)`` float64 in the series' channel order (422 on a mismatch)."""
        first = batch.values[0]
        is_dict = isinstance(first, dict)
        if record.count and (record.channels is not None) != is_dict:
            expected = "a number" if record.channels is None else f"a dict of {record.channels}"
            raise invalid(["body", "observations", 0, "y"], f"this series takes {expected}")
        if not is_dict:
            return np.array(batch.values, dtype=np.float64).reshape(-1, 1)
        if record.count == 0 and record.channels is None:
            check_layout(record.params, first)
        channels = record.channels if record.count else tuple(first)
        wanted = set(channels)
        rows = np.empty((len(batch), len(channels)), dtype=np.float64)
        for i, value in enumerate(batch.values):
            if value.keys() != wanted:
                missing = sorted(wanted - value.keys())
                extra = sorted(value.keys() - wanted)
                raise invalid(
                    ["body", "observations", i, "y"],
                    f"channels differ from the series' {list(channels)}: "
                    f"missing {missing}, extra {extra}",
                )
            rows[i] = [value[name] for name in channels]
        return rows
