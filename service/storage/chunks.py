"""Observations as stored: one row per accepted push of a series (a chunk), not one per observation.

A chunk holds observations ``start .. start + n - 1`` of a series: their time keys as
one little-endian array (``int64`` for ISO keys, exact microseconds; ``float64`` for
numeric ones) and their values as one ``(n, c)`` float64 array, row-major. A push
then costs the database one small row, so a commit dirties about one page per
series pushed to, instead of a row per observation plus an index entry each (the
page writes are what a write-ahead log and its checkpoints copy, whatever the row
size). The key columns of the first and last observation bound each chunk, and the
storage refuses a chunk that does not extend its series (contiguous ``start``,
``t_first`` above the previous chunk's ``t_last``), and `encode_keys` refuses keys
that do not strictly increase within one: idempotency on ``(series, t)`` does not
rest on the committer alone.

Lookups by ``seq`` use PostgreSQL's primary key ``(sid, start)`` or SQLite's chunk
directory (`service.storage.chunk_directory`: no index written on every push); lookups
by time bisect over chunks (keys grow with ``seq``), so no time index is written. This
module holds the backend-neutral part: encoding, and the queries built on one
backend primitive, "the chunks from the one holding ``seq`` on".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from ..timestamps import TimeKey

#: Observations per chunk at most: a longer push is stored as several chunks (so a time
#: lookup decodes at most this many keys), and so are regrouped rows of schema 1.
MAX_CHUNK = 1024


@dataclass(frozen=True, slots=True)
class StoredChunk:
    """One stored chunk as the database returns it."""

    start: int
    n: int
    t_first: TimeKey
    t_last: TimeKey
    t: bytes  # empty: evenly spaced keys, left out (`encode_keys`)
    y: bytes

    @property
    def end(self) -> int:
        return self.start + self.n

    def keys(self) -> list[TimeKey]:
        """The time keys, with their type: ``int`` for ISO times, ``float`` for numbers."""
        return decode_keys(self.t_first, self.t_last, self.n, self.t)

    def values(self) -> np.ndarray:
        """``(n, c)`` float64."""
        return np.frombuffer(self.y, dtype="<f8").reshape(self.n, -1)


#: ``fetch(sid, seq, max_chunks, values)``: the chunks of ``sid`` in order, from the one
#: holding ``seq`` (or the last one before it), at most ``max_chunks``; with ``values``
#: false, their ``y`` is left empty (not read).
Fetch = Callable[[int, int, int, bool], list[StoredChunk]]


def encode_keys(keys: list[TimeKey], leave_out_even: bool = False) -> bytes:
    """Time keys as one array: ``int64`` if they are ints (ISO), else ``float64``.

    Every chunk is encoded here on its way into either database, so this is where keys
    that do not strictly increase within a chunk are refused (the database bounds only
    a chunk's ends). With ``leave_out_even``, keys that `even_keys` rebuilds bit for bit
    from the chunk's first and last key and count are stored as nothing at all.
    """
    dtype = "<i8" if isinstance(keys[0], int) else "<f8"
    array = np.asarray(keys, dtype=dtype)
    if array.size > 1 and not np.all(array[1:] > array[:-1]):
        raise ValueError("the time keys of a chunk must strictly increase")
    blob = array.tobytes()
    if leave_out_even and even_keys(keys[0], keys[-1], len(keys)).tobytes() == blob:
        return b""
    return blob


def even_keys(t_first: TimeKey, t_last: TimeKey, n: int) -> np.ndarray:
    """``n`` evenly spaced keys from ``t_first`` to about ``t_last`` (exactly, for ints
    whose span ``n - 1`` divides); the same arithmetic on every machine (IEEE float64)."""
    steps = np.arange(n, dtype="<i8")
    if isinstance(t_first, int):
        step = (int(t_last) - t_first) // max(n - 1, 1)
        return (t_first + steps * step).astype("<i8")
    step = (float(t_last) - t_first) / max(n - 1, 1)
    return (np.float64(t_first) + steps.astype("<f8") * np.float64(step)).astype("<f8")


def decode_keys(t_first: TimeKey, t_last: TimeKey, n: int, blob: bytes) -> list[TimeKey]:
    if not blob:
        return even_keys(t_first, t_last, n).tolist()
    dtype = "<i8" if isinstance(t_first, int) else "<f8"
    return np.frombuffer(blob, dtype=dtype).tolist()


def encode_values(values: np.ndarray) -> bytes:
    """``(n, c)`` values as row-major little-endian float64."""
    return np.ascontiguousarray(values, dtype="<f8").tobytes()


def iter_chunks(fetch: Fetch, sid: int, seq: int, batch: int = 64) -> Iterator[StoredChunk]:
    """Every chunk holding an observation ``>= seq``, in order."""
    while True:
        chunks = fetch(sid, seq, batch, True)
        for chunk in chunks:
            if chunk.end > seq:
                yield chunk
        if len(chunks) < batch:
            return
        seq = max(seq, chunks[-1].end)


def page(fetch: Fetch, sid: int, offset: int, limit: int) -> list[tuple[int, TimeKey, bytes]]:
    """``(seq, t_key, y bytes)`` of observations ``seq >= offset``, in order, at most ``limit``."""
    rows: list[tuple[int, TimeKey, bytes]] = []
    if limit <= 0:
        return rows
    for chunk in iter_chunks(fetch, sid, max(offset, 0)):
        width = len(chunk.y) // chunk.n
        keys = chunk.keys()
        for j in range(max(offset - chunk.start, 0), chunk.n):
            rows.append((chunk.start + j, keys[j], chunk.y[j * width : (j + 1) * width]))
            if len(rows) >= limit:
                return rows
    return rows


def blocks(
    fetch: Fetch, sid: int, start: int, block: int
) -> Iterator[tuple[np.ndarray, list[TimeKey]]]:
    """Values ``(n, c)`` and keys of observations ``seq >= start``, in blocks of about
    ``block`` (whole chunks are decoded at once: no per-observation rows)."""
    values: list[np.ndarray] = []
    keys: list[TimeKey] = []
    size = 0
    expected = start
    for chunk in iter_chunks(fetch, sid, start):
        if chunk.start > expected:
            raise RuntimeError(f"observations of series {sid} are not contiguous at {expected}")
        skip = expected - chunk.start
        values.append(chunk.values()[skip:])
        keys.extend(chunk.keys()[skip:])
        size += chunk.n - skip
        expected = chunk.end
        if size >= block:
            yield np.concatenate(values), keys
            values, keys, size = [], [], 0
    if size:
        yield np.concatenate(values), keys


def times(fetch: Fetch, sid: int, seqs: list[int]) -> dict[int, TimeKey]:
    """The time keys of the given observation indices (missing ones are left out)."""
    out: dict[int, TimeKey] = {}
    chunk: StoredChunk | None = None
    keys: list[TimeKey] = []
    for seq in sorted({s for s in seqs if s >= 0}):
        if chunk is None or not chunk.start <= seq < chunk.end:
            found = fetch(sid, seq, 1, False)
            if not found or not found[0].start <= seq < found[0].end:
                continue
            chunk = found[0]
            keys = chunk.keys()
        out[seq] = keys[seq - chunk.start]
    return out


def values_between(
    fetch: Fetch, sid: int, count: int, low: TimeKey, high: TimeKey
) -> dict[TimeKey, bytes]:
    """Stored ``t_key -> y bytes`` with ``low <= t_key <= high`` (``count``: the series'
    observations). Bisects over ``seq`` for the chunk holding ``low``, then reads on."""
    lo, hi = 0, count - 1  # the first chunk to read starts at or before ``lo``'s chunk
    first = 0
    while lo <= hi:
        mid = (lo + hi) // 2
        found = fetch(sid, mid, 1, False)
        if not found:
            break
        chunk = found[0]
        if chunk.t_first <= low:
            first = chunk.start
            lo = chunk.end
        else:
            hi = chunk.start - 1
    out: dict[TimeKey, bytes] = {}
    for chunk in iter_chunks(fetch, sid, first):
        if chunk.t_first > high:
            break
        width = len(chunk.y) // chunk.n
        for j, key in enumerate(chunk.keys()):
            if low <= key <= high:
                out[key] = chunk.y[j * width : (j + 1) * width]
    return out
