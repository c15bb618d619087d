"""A cheap look at every live model, for lists: memory size and interval coverage now.

Unlike `Registry.read`, a peek does not wait for read-your-writes: it reports what
the model has learned so far (``applied``), next to what is acknowledged
(``n_observations``). A list of many series must not wait on each one's backlog.
"""

from __future__ import annotations

from typing import Any

from .payloads import finite, summary
from .registry import Registry
from .series import Series

#: How long a peek waits for a series' lock: an apply worker holds it one slice at a time.
LOCK_WAIT_SECONDS = 0.2


def peek(series: Series) -> dict[str, Any]:
    """The series' summary plus its model's memory size and coverage (run in a thread).

    ``memory_size`` and ``coverage`` are ``None`` when the model is not loaded yet
    or stayed busy for `LOCK_WAIT_SECONDS`.
    """
    record = series.record
    stats: dict[str, Any] = {"applied": series.applied, "memory_size": None, "coverage": None}
    if series.lock.acquire(timeout=LOCK_WAIT_SECONDS):
        try:
            model = series.model
            if model is not None and series.model_incarnation == record.incarnation:
                coverage = model.coverage
                stats = {
                    "applied": series.applied,
                    "memory_size": model.memory_size,
                    "coverage": finite(coverage) if coverage is not None else None,
                }
        finally:
            series.lock.release()
    return {**summary(record), "level": float(record.params["level"]), **stats}


def peek_page(registry: Registry, ids: list[str]) -> list[dict[str, Any]]:
    """`peek` each listed series that still exists, in order."""
    items = []
    for series_id in ids:
        series = registry.catalog.get(series_id)
        if series is not None and not series.deleted:
            items.append(peek(series))
    return items
