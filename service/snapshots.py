"""Model snapshots in the library's file format, written atomically and durably.

A snapshot of a series is ``<incarnation>-<seq>.ekm`` in the snapshot dir: the
model after its first ``seq`` observations. The incarnation (a random id that
changes when the series is created or reconfigured) ties a file to one life of
one series, so a snapshot can never be applied to the wrong model. Writing goes
to a temporary name (``.tmp-<name>.part``), is fsynced, then renamed over, and the
directory is fsynced; older snapshots of the same incarnation are removed
afterwards. What to write and when is decided elsewhere (`service.snapshot_writer`,
`service.snapshot_policy`). At start-up the
newest loadable snapshot is used, and every later observation is replayed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import re
import threading
from pathlib import Path

from episodic_koopman import EpisodicKoopman
from episodic_koopman.persistence import model_to_bytes

log = logging.getLogger("episodic_koopman.service")

_NAME = re.compile(r"^([0-9a-f]{32})-([0-9]{12})\.ekm$")
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


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


class SnapshotStore:
    """Snapshot files of every series, indexed by incarnation."""

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
        """The size of a snapshot file in bytes (0 if it is gone)."""
        try:
            return self.path(incarnation, seq).stat().st_size
        except FileNotFoundError:
            return 0

    def save(self, model: EpisodicKoopman, incarnation: str, seq: int) -> int:
        """Write ``model`` as the snapshot ``seq`` of ``incarnation``; returns its size."""
        data = model_to_bytes(model)
        self.save_bytes(incarnation, seq, data)
        return len(data)

    def save_bytes(self, incarnation: str, seq: int, data: bytes) -> None:
        """Write a model file's bytes durably: temporary file, fsync, rename, directory fsync."""
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

    def discard(self, incarnation: str) -> None:
        """Remove every snapshot of an incarnation (its series was deleted or reconfigured)."""
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

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
