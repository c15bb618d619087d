"""Observation timestamps: ISO-8601 strings or numbers, mapped to exact sort keys.

Inside the library observations are indices 0..n-1; the service keeps their
times. A series uses one kind of time, fixed by its first observation:

* ``"iso"``: ISO-8601 strings. The key is the integer number of microseconds
  since 1970-01-01 UTC (naive times count as UTC), so comparisons are exact.
* ``"number"``: finite numbers with ``|t| <= 2**53``, compared as floats.

Forecast steps get timestamps when the recent spacing is regular: the last
`REGULAR_RUN` gaps (or all of them, if fewer) are equal.

>>> parse_t("2011-01-01T01:00:00Z").key - parse_t("2011-01-01").key
3600000000
>>> s = Spacing().advance(0.0, 1.5).advance(1.5, 3.0)
>>> s.step, s.run, s.regular(3)
(1.5, 2, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

#: Equal trailing gaps needed for a spacing to count as regular.
REGULAR_RUN = 24
#: Largest magnitude of a numeric timestamp (floats are exact integers up to here).
MAX_NUMERIC_T = 2**53
#: Longest accepted ISO-8601 string.
MAX_ISO_LENGTH = 64

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

TimeKey = int | float


@dataclass(frozen=True, slots=True)
class Stamp:
    """One parsed timestamp: its kind, exact sort key, and UTC offset in seconds (ISO only)."""

    kind: str
    key: TimeKey
    tz: int | None = None


def parse_t(value: Any) -> Stamp:
    """Parse an observation's ``t``; ``ValueError`` says why it is not a timestamp."""
    if isinstance(value, bool):
        raise ValueError("t must be an ISO-8601 string or a number, got a boolean")
    if isinstance(value, int):
        if abs(value) > MAX_NUMERIC_T:
            raise ValueError(f"numeric t must satisfy |t| <= 2**53, got {value}")
        return Stamp("number", float(value))
    if isinstance(value, float):
        if not math.isfinite(value) or abs(value) > MAX_NUMERIC_T:
            raise ValueError(f"numeric t must be finite with |t| <= 2**53, got {value!r}")
        return Stamp("number", value)
    if isinstance(value, str):
        if len(value) > MAX_ISO_LENGTH:
            raise ValueError(f"t is longer than {MAX_ISO_LENGTH} characters")
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"t is not an ISO-8601 timestamp: {value[:40]!r}") from None
        offset = moment.utcoffset()
        if offset is None:
            tz = None
            moment = moment.replace(tzinfo=UTC)
        else:
            tz = int(offset.total_seconds())
        return Stamp("iso", (moment - _EPOCH) // _MICROSECOND, tz)
    raise ValueError(f"t must be an ISO-8601 string or a number, got {type(value).__name__}")


def render_t(kind: str, key: TimeKey, tz: int | None) -> str | float:
    """The JSON form of a key: an ISO string (in offset ``tz``; naive if None) or a number."""
    if kind == "number":
        return float(key)
    moment = _EPOCH + int(key) * _MICROSECOND
    if tz is None:
        return moment.replace(tzinfo=None).isoformat()
    return moment.astimezone(timezone(timedelta(seconds=tz))).isoformat()


@dataclass(frozen=True, slots=True)
class Spacing:
    """The latest gap between observations and how many trailing gaps equal it."""

    step: TimeKey | None = None
    run: int = 0

    def advance(self, previous: TimeKey | None, key: TimeKey) -> Spacing:
        if previous is None:
            return self
        gap = key - previous
        if self.step is not None and same_gap(gap, self.step):
            return Spacing(self.step, self.run + 1)
        return Spacing(gap, 1)

    def regular(self, count: int) -> bool:
        """Whether the recent spacing is regular, given ``count`` observations."""
        return self.step is not None and self.run >= min(count - 1, REGULAR_RUN)


def same_gap(gap: TimeKey, step: TimeKey) -> bool:
    if isinstance(gap, int) and isinstance(step, int):
        return gap == step
    # Numeric times such as 0.1, 0.2, 0.3 have gaps that differ in the last bits.
    return math.isclose(gap, step, rel_tol=1e-9, abs_tol=0.0)


def future_times(
    kind: str, last: TimeKey, spacing: Spacing, count: int, tz: int | None, horizon: int
) -> list[str | float] | None:
    """Timestamps of forecast steps ``1..horizon`` when the spacing is regular, else None."""
    if not spacing.regular(count) or spacing.step is None:
        return None
    step = spacing.step
    if kind == "iso":
        limit = (datetime(9999, 12, 31, tzinfo=UTC) - _EPOCH) // _MICROSECOND
        if int(last) + horizon * int(step) > limit:
            return None  # past the year 9999: no ISO form
        return [render_t(kind, int(last) + h * int(step), tz) for h in range(1, horizon + 1)]
    return [float(last + h * step) for h in range(1, horizon + 1)]
