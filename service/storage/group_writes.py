"""The write rules of the commands, applied inside one group commit's transaction.

A `GroupWrites` is made per group commit by the `service.storage.committer.Committer`.
It decides each command against the committed records plus the changes of the
group's earlier commands (``work``), and does the command's writes through the
`WriteSession`:

* **ingest**: idempotency on ``(series, t)``: an identical re-send is a duplicate,
  the same ``t`` with another ``y`` and a ``t`` older than the series' last one (and
  never stored) are 409s; the accepted observations become chunks;
* **configure**: a new series, or a new incarnation when the parameters change (its
  model is rebuilt by replay);
* **delete**: the series and its observations go.

Each command's effects (new records, chunks to apply) are collected for the committer
to publish once the transaction has committed; ``work`` becomes the committer's
records then, and is dropped if the transaction fails.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import replace
from typing import Any

import numpy as np

from ..errors import ApiError, invalid
from ..ingest import ParsedBatch
from ..timestamps import Spacing, TimeKey, render_t, same_gap
from .base import WriteSession
from .model_params import canonical_params, check_layout, full_params
from .records import (
    Chunk,
    Command,
    Configure,
    ConfigureOutcome,
    Effect,
    Ingest,
    IngestOutcome,
    SeriesRecord,
)


class GroupWrites:
    """One group commit's commands, applied in its transaction (the committer's thread)."""

    def __init__(
        self,
        session: WriteSession,
        records: dict[str, SeriesRecord],
        max_series: int,
        model_defaults: dict[str, Any],
    ) -> None:
        self.session = session
        self.records = records  # the committed records (read only here)
        self.max_series = max_series
        self.model_defaults = model_defaults
        # This group's new records so far (None: deleted); the committed records once
        # the transaction has committed.
        self.work: dict[str, SeriesRecord | None] = {}

    def apply(self, command: Command, effects: list[Effect]) -> Any:
        """Apply one command (in its savepoint); its effects are appended to ``effects``."""
        if isinstance(command, Ingest):
            return self._ingest(command, effects)
        if isinstance(command, Configure):
            return self._configure(command, effects)
        return self._delete(command.series_id, effects)

    def _current(self, series_id: str) -> SeriesRecord | None:
        if series_id in self.work:
            return self.work[series_id]
        return self.records.get(series_id)

    def _n_series(self) -> int:
        n = len(self.records)
        for series_id, record in self.work.items():
            if record is None and series_id in self.records:
                n -= 1
            elif record is not None and series_id not in self.records:
                n += 1
        return n

    def _create(self, series_id: str, params: dict[str, Any]) -> SeriesRecord:
        if self._n_series() >= self.max_series:
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

    def _configure(self, command: Configure, effects: list[Effect]) -> ConfigureOutcome:
        params = full_params({**self.model_defaults, **command.params})
        record = self._current(command.series_id)
        if record is None:
            record = self._create(command.series_id, params)
            self.work[command.series_id] = record
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
        self.work[command.series_id] = record
        effects.append(Effect("upsert", record.id, record))
        return ConfigureOutcome(record, created=False, changed=True)

    def _delete(self, series_id: str, effects: list[Effect]) -> bool:
        record = self._current(series_id)
        if record is None:
            return False
        self.session.delete_series(record.sid)
        self.work[series_id] = None
        effects.append(Effect("delete", record.id, record))
        return True

    def _ingest(self, command: Ingest, effects: list[Effect]) -> IngestOutcome:
        batch = command.batch
        record = self._current(command.series_id)
        created = record is None
        if record is None:
            params = full_params(dict(self.model_defaults))
            check_layout(params, batch.values[0])
            record = self._create(command.series_id, params)
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
        self.work[command.series_id] = record
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
