"""Schema 1 -> 2, for both backends: each series' observation rows become chunks of up to
`MAX_CHUNK` (`service.storage.chunks`), its newest chunk takes the state from its series
row, and the old table goes. A dialect gives the statements and the column conversions
(`sqlite_schema`, `postgres_schema`); the loop is this one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..timestamps import TimeKey
from .chunks import MAX_CHUNK, encode_keys


@dataclass(frozen=True, slots=True)
class Schema1Dialect:
    """What differs between the backends' migrations."""

    #: ``sid`` and then the series' state columns, one row per series.
    series: str
    #: One series' observations in ``seq`` order (its one parameter: the sid); a row's
    #: first column is ``seq``, its last ``y``.
    observations: str
    #: One chunk row (`chunk_params` gives its parameters).
    insert_chunk: str
    #: An observation row's time key.
    key: Callable[[Sequence[Any]], TimeKey]
    #: The insert's parameters: ``(sid, start, keys, t blob, y blob, state)``, ``state``
    #: the series row's state columns for its newest chunk and None for the others.
    chunk_params: Callable[
        [int, int, list[TimeKey], bytes, bytes, Sequence[Any] | None], Sequence[Any]
    ]


def migrate_from_1(conn: Any, dialect: Schema1Dialect) -> None:
    """Schema 1 -> 2 in the caller's transaction (``conn``: a DB-API connection with
    ``execute``, sqlite3's or psycopg's)."""
    for sid, *state in conn.execute(dialect.series).fetchall():
        rows = conn.execute(dialect.observations, (sid,)).fetchall()
        for at in range(0, len(rows), MAX_CHUNK):
            part = rows[at : at + MAX_CHUNK]
            keys = [dialect.key(row) for row in part]
            newest = at + MAX_CHUNK >= len(rows)
            conn.execute(
                dialect.insert_chunk,
                dialect.chunk_params(
                    sid,
                    part[0][0],
                    keys,
                    encode_keys(keys),
                    b"".join(bytes(row[-1]) for row in part),
                    state if newest else None,
                ),
            )
    conn.execute("DROP TABLE observations")
