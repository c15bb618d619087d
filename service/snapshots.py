"""Model snapshots in the library's file format: the interface, and its files store.

A snapshot of a series is the model after its first ``seq`` observations, kept
under the series' incarnation (a random id that changes when the series is created
or reconfigured), so a snapshot can never be applied to the wrong model. What to
write and when is decided elsewhere (`service.snapshot_writer`,
`service.snapshot_policy`). At start-up the newest loadable snapshot is used, and
every later observation is replayed.

Two stores implement `SnapshotStore`: `FileSnapshotStore` (here; the default, and
SQLite's) keeps ``<incarnation>-<seq>.ekm`` files in a local dir, and
`service.storage.postgres_snapshots.PostgresSnapshotStore` keeps one row per
incarnation in the PostgreSQL database, so that a server on any node restores
from it. `service.storage.base.Storage.snapshot_store` picks one.
"""

from __future__ import annotations

import abc
import ctypes
import ctypes.util
import logging
import os
import re
import threading
from pathlib import Path

from episodic_koopman import EpisodicKoopman

log = logging.getLogger("episodic_koopman.service")

_NAME = re.compile(r"^([0-9a-f]{32})-([0-9]{12})\.ekm$")
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameters
_M_ARENA_MAX = -8


def pin_mmap_threshold(threshold: int = 128 * 1024) -> bool:
    """Fix glibc's mmap threshold (no-op elsewhere, or for 0); True if it was set.

    Saving and loading a snapshot allocate and free multi-megabyte buffers. After
    such a free, glibc raises its mmap threshold to that size, so the buffers of
    growing models (episode memory columns) are later carved from the heap instead
    of their own mappings: zero-filled and fragmented, never returned. A server
    restored from snapshots held 8.5 MiB per series that way, against 5.7 MiB for one
    that never restarted. A fixed threshold (what setting it explicitly does) keeps
    large buffers in mappings that are returned to the system when freed; the cost is
    fresh (page-faulted) memory for every large buffer, e.g. slower snapshot loads.
    """
    name = ctypes.util.find_library("c")
    if not name or threshold <= 0:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False


def pin_malloc_arenas(arenas: int = 1) -> bool:
    """Cap glibc's malloc arenas (no-op elsewhere, or for 0); True if it was set.

    Each thread that allocates gets an arena of its own, up to eight per core. Models are
    restored (and applied) on worker threads, and in a worker's own arena a snapshot's
    load page-faulted half as often again as on the main thread (690 faults against 466
    for 1,950 observations) and took about 15% more CPU time. One arena for every thread
    costs a lock per allocation that, under the GIL, is hardly ever contended. It holds
    for threads that allocate for the first time after the call.
    """
    name = ctypes.util.find_library("c")
    if not name or arenas <= 0:
        return False
    try:
        return bool(ctypes.CDLL(name).mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


class SnapshotStore(abc.ABC):
    """The snapshots of a server's series, indexed by incarnation (any thread).

    Only the newest snapshot of an incarnation is worth keeping: a write removes the
    older ones. A write is fenced where the store is shared: a server that no longer
    owns the series' shard gets `service.storage.StaleOwner` and stores nothing.
    """

    @abc.abstractmethod
    def incarnations(self) -> set[str]:
        """The incarnations with snapshots (of this server's shards)."""

    @abc.abstractmethod
    def candidates(self, incarnation: str, at_most: int) -> list[int]:
        """Snapshot sequence numbers of an incarnation, newest first, up to ``at_most``."""

    @abc.abstractmethod
    def load(self, incarnation: str, seq: int) -> EpisodicKoopman:
        """The model of a snapshot (raises if it is missing or unreadable)."""

    @abc.abstractmethod
    def size(self, incarnation: str, seq: int) -> int:
        """The size of a snapshot in bytes (0 if it is gone)."""

    @abc.abstractmethod
    def save_bytes(self, series_id: str, sid: int, incarnation: str, seq: int, data: bytes) -> bool:
        """Store a model file's bytes durably as snapshot ``seq`` of the series' incarnation
        and drop its older ones. False if it was not stored (the series is gone or has a
        newer snapshot); `service.storage.StaleOwner` if this server lost its shard."""

    @abc.abstractmethod
    def discard(self, incarnation: str) -> None:
        """Remove every snapshot of an incarnation (its series was deleted or reconfigured)."""

    @abc.abstractmethod
    def discard_invalid(self, incarnation: str, seq: int) -> None:
        """Remove one snapshot that could not be restored."""

    @abc.abstractmethod
    def stored(self) -> dict[str, list[int]]:
        """What the backing store holds now, read afresh (not the index): sequence numbers
        by incarnation, ascending (diagnostics and tests)."""

    def close(self) -> None:  # noqa: B027 (optional: only a database store has connections)
        """Release connections, if the store has any."""


class FileSnapshotStore(SnapshotStore):
    """Snapshot files in a local dir: ``<incarnation>-<seq>.ekm``.

    Writing goes to a temporary name (``.tmp-<name>.part``), is fsynced, then renamed
    over, and the directory is fsynced; older snapshots of the same incarnation are
    removed afterwards. Nothing is fenced: the dir belongs to one server (the data
    dir's lock, or one dir per Ray actor).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._index: dict[str, list[int]] = {}
        for path in directory.iterdir():
            match = _NAME.match(path.name)
            if match:
                self._index.setdefault(match.group(1), []).append(int(match.group(2)))
            elif path.name.startswith("."):
                path.unlink(missing_ok=True)  # a temporary file left by a crash mid-write
        for seqs in self._index.values():
            seqs.sort()

    def path(self, incarnation: str, seq: int) -> Path:
        return self.directory / f"{incarnation}-{seq:012d}.ekm"

    def incarnations(self) -> set[str]:
        with self._lock:
            return set(self._index)

    def candidates(self, incarnation: str, at_most: int) -> list[int]:
        """Snapshot sequence numbers of an incarnation, newest first, up to ``at_most``."""
        with self._lock:
            return [s for s in reversed(self._index.get(incarnation, [])) if s <= at_most]

    def load(self, incarnation: str, seq: int) -> EpisodicKoopman:
        return EpisodicKoopman.load(self.path(incarnation, seq))

    def size(self, incarnation: str, seq: int) -> int:
        try:
            return self.path(incarnation, seq).stat().st_size
        except FileNotFoundError:
            return 0

    def save_bytes(self, series_id: str, sid: int, incarnation: str, seq: int, data: bytes) -> bool:
        """Temporary file, fsync, rename, directory fsync; then the older files go."""
        final = self.path(incarnation, seq)
        tmp = self.directory / f".tmp-{final.name}.part"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._sync_directory()
        with self._lock:
            seqs = self._index.setdefault(incarnation, [])
            older = [s for s in seqs if s < seq]
            self._index[incarnation] = sorted({s for s in seqs if s >= seq} | {seq})
        for s in older:
            self.path(incarnation, s).unlink(missing_ok=True)
        return True

    def discard(self, incarnation: str) -> None:
        with self._lock:
            seqs = self._index.pop(incarnation, [])
        for s in seqs:
            self.path(incarnation, s).unlink(missing_ok=True)

    def discard_invalid(self, incarnation: str, seq: int) -> None:
        with self._lock:
            seqs = self._index.get(incarnation, [])
            if seq in seqs:
                seqs.remove(seq)
        self.path(incarnation, seq).unlink(missing_ok=True)

    def stored(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for path in self.directory.iterdir():
            match = _NAME.match(path.name)
            if match:
                out.setdefault(match.group(1), []).append(int(match.group(2)))
        return {incarnation: sorted(seqs) for incarnation, seqs in out.items()}

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
