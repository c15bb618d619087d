"""The memory that shared-scope models share: created, merged across partitions, saved.

A saved memory is a ZIP of a JSON manifest and an npz of the memory's state (no
pickle), given to the next run as its ``initial_memory``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..forecaster import EpisodicKoopman
from ..memory import EpisodeMemory
from .errors import BatchInputError

if TYPE_CHECKING:  # tasks imports this module: only the type, not a cycle at run time
    from .tasks import PartitionOutput

MEMORY_FORMAT = "episodic-koopman-memory"
MEMORY_FORMAT_VERSION = 3  # 3: 8-bit index codes over fixed key bounds, windows copied


def source_id(uid: Any) -> int:
    """A stable id for a series in a shared memory (the same in every process and run)."""
    digest = hashlib.blake2b(str(uid).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 2


def new_memory(params: dict[str, Any]) -> EpisodeMemory:
    """An empty memory that univariate models built with ``params`` can share."""
    return EpisodicKoopman.from_flat(params).new_memory()


def merge_memories(
    params: dict[str, Any],
    outputs: Sequence[PartitionOutput],
    initial: tuple[dict[str, Any], dict[str, np.ndarray]] | None = None,
) -> EpisodeMemory:
    """One memory from the episodes of every partition (and of ``initial`` first).

    Episodes enter in the order in which they completed: by completion timestamp,
    then partition, then their id within the partition. The memory's FIFO capacity
    keeps the newest. The order depends only on the data and the partitioning, so
    the merged memory is the same whichever engine ran the partitions.
    """
    merged = new_memory(params)
    if initial is not None:
        merged.set_state(*initial)
    entries = [
        (t, out.partition, i, out)
        for out in outputs
        for i, t in enumerate(out.completed_at.tolist())
    ]
    entries.sort(key=lambda e: (e[0], e[1], e[2]))
    for _, _, i, out in entries:
        merged.add(out.keys[i], {name: column[i] for name, column in out.records.items()})
    return merged


def save_memory(memory: EpisodeMemory, path: str | Path, sources: dict[int, Any]) -> None:
    """Write a (merged) shared memory: a ZIP of a JSON manifest and an npz of its state."""
    path = Path(path)
    meta, arrays = memory.get_state()
    manifest = {
        "format": MEMORY_FORMAT,
        "format_version": MEMORY_FORMAT_VERSION,
        "dim": memory.dim,
        "capacity": memory.capacity,
        "hnsw_threshold": memory.hnsw_threshold,
        "state": meta,
        "sources": {str(k): str(v) for k, v in sources.items()},
    }
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr("manifest.json", json.dumps(manifest))
            zf.writestr("memory.npz", buffer.getvalue())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_memory(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
    """Read a memory written by `save_memory`: ``(state meta, state arrays, manifest)``."""
    try:
        with zipfile.ZipFile(path) as zf:
            manifest = json.loads(zf.read("manifest.json"))
            with np.load(io.BytesIO(zf.read("memory.npz")), allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError):
        raise BatchInputError(f"{path} is not a shared-memory file") from None
    if manifest.get("format") != MEMORY_FORMAT:
        raise BatchInputError(f"{path} is not a shared-memory file")
    if manifest.get("format_version") != MEMORY_FORMAT_VERSION:
        raise BatchInputError(
            f"{path} has shared-memory format version {manifest.get('format_version')}; "
            f"this library reads version {MEMORY_FORMAT_VERSION}: rebuild the memory"
        )
    return manifest["state"], arrays, manifest
