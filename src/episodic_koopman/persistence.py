"""Saving and loading models: a versioned single file, without pickle.

A saved model is a ZIP archive (stored, not compressed) of three members:

``manifest.json``
    ``{"format": "episodic-koopman", "format_version": 1, "params": {...},
    "state": {...}}``: constructor parameters and scalar state.
``state.npz``
    Every array of the learned state (NumPy format, loaded with
    ``allow_pickle=False``).
``memory.faiss``
    The episode index in FAISS's own format (``faiss.write_index``), if the
    model has a memory.

Files are written to a temporary name and renamed, so a crash never leaves a
half-written model. A loaded model continues bit-identically: same forecasts,
same future updates.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__
from .forecaster import _PendingRecords, _PendingScore
from .operator import KoopmanFit
from .spectrum import Signature

if TYPE_CHECKING:
    from .forecaster import EpisodicKoopman

FORMAT = "episodic-koopman"
FORMAT_VERSION = 1

_SCORE_FIELDS = (
    "tracks",
    "available",
    "issued",
    "spread",
    "lower",
    "upper",
    "ref_scale",
    "realised",
)
_FIT_FIELDS = ("basis", "sigma", "reduced", "eigenvalues", "eigenvectors", "inverse_eigenvectors")


def _prefixed(prefix: str, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {f"{prefix}.{k}": np.asarray(v) for k, v in state.items()}


def _unprefixed(prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    start = len(prefix) + 1
    return {k[start:]: v for k, v in arrays.items() if k.startswith(prefix + ".")}


def _stack(prefix: str, items: list[Any], fields: tuple[str, ...]) -> dict[str, np.ndarray]:
    if not items:
        return {}
    out = {f"{prefix}.{name}": np.stack([getattr(item, name) for item in items]) for name in fields}
    out[f"{prefix}.ints"] = np.array(
        [
            [item.origin, getattr(item, "window_start", 0), getattr(item, "n_realised", 0)]
            for item in items
        ],
        dtype=np.int64,
    )
    return out


def _signature_arrays(prefix: str, signatures: list[Signature]) -> dict[str, np.ndarray]:
    if not signatures:
        return {}
    return {
        f"{prefix}.sig_rank": np.array([sig.rank for sig in signatures], dtype=np.int64),
        f"{prefix}.sig_eigenvalues": np.stack([sig.eigenvalues for sig in signatures]),
        f"{prefix}.sig_modes": np.stack([sig.modes for sig in signatures]),
    }


def _signature_at(arrays: dict[str, np.ndarray], prefix: str, i: int) -> Signature:
    return Signature(
        eigenvalues=np.array(arrays[f"{prefix}.sig_eigenvalues"][i]),
        modes=np.array(arrays[f"{prefix}.sig_modes"][i]),
        rank=int(arrays[f"{prefix}.sig_rank"][i]),
    )


def model_state(model: EpisodicKoopman) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The model's learned state as JSON metadata and named arrays.

    Episodes are brought up to date first (as any read does), so the state is
    canonical: two models that learned the same observations give the same state.
    """
    model._catch_up()
    meta: dict[str, Any] = {
        "channels": model._channels,
        "scalar": model._scalar,
        "n": model._n,
        "n_missing": model._n_missing,
        "ready_at": model._ready_at,
        "components_ready": model._components_ready,
        "has_reference": model._ref_mean is not None,
        "has_last": model._last_finite is not None,
        "source": model._source,
    }
    arrays: dict[str, np.ndarray] = {}
    if model._last_finite is not None:
        arrays["last_finite"] = model._last_finite
    if model._ref_mean is not None:
        arrays["ref_mean"], arrays["ref_scale"] = model._ref_mean, model._ref_scale
    if not model._components_ready:
        return meta, arrays
    arrays["scaler"] = model._scaler.get_state()
    arrays |= _prefixed("history", model._history.get_state())
    arrays |= _prefixed("operator", model._operator.get_state())
    arrays |= _prefixed("lifting", model._lift_map.get_state())
    arrays |= _prefixed("calibrator", model._calibrator.get_state())
    arrays["threshold"] = model._threshold.get_state()
    if model._gate is not None:
        arrays |= _prefixed("gate", model._gate.get_state())
    if model._mixture is not None:
        arrays |= _prefixed("mixture", model._mixture.get_state())
    fit = model._last_fit
    meta["has_last_fit"] = fit is not None
    if fit is not None:
        arrays |= {f"last_fit.{name}": getattr(fit, name) for name in _FIT_FIELDS}
        arrays["last_fit.n_pairs"] = np.array(fit.n_pairs, dtype=np.int64)
    meta["has_last_signature"] = model._last_signature is not None
    if model._last_signature is not None:
        arrays |= _signature_arrays("last", [model._last_signature])
    records, scores = model._pending_records, model._pending_scores
    meta["record_cursor"] = model._record_cursor
    meta["has_pending_records"] = records is not None
    meta["n_pending_scores"] = len(scores)
    if records is not None:
        arrays |= {f"records.{name}": getattr(records, name) for name in records.FIELDS}
    arrays |= _stack("scores", scores, _SCORE_FIELDS)
    if model._memory is not None:
        memory_meta, memory_arrays = model._memory.get_state()
        meta["memory"] = memory_meta
        arrays |= _prefixed("memory", memory_arrays)
    return meta, arrays


def restore_state(model: EpisodicKoopman, meta: dict[str, Any], arrays: dict[str, np.ndarray]):
    """Inverse of `model_state` on a freshly constructed model with the same parameters."""
    model._reset()
    model._channels = meta["channels"]
    model._scalar = meta["scalar"]
    model._n = int(meta["n"])
    model._n_missing = int(meta["n_missing"])
    model._source = int(meta.get("source", 0))
    model._ready_at = None if meta["ready_at"] is None else int(meta["ready_at"])
    if meta["has_last"]:
        model._last_finite = np.array(arrays["last_finite"], dtype=np.float64)
    if meta["has_reference"]:
        model._ref_mean = np.array(arrays["ref_mean"], dtype=np.float64)
        model._ref_scale = np.array(arrays["ref_scale"], dtype=np.float64)
    if not meta["components_ready"]:
        return
    n_channels = len(model._channels) if model._channels is not None else 1
    model._setup(n_channels)
    model._scaler.set_state(arrays["scaler"])
    model._history.set_state(_unprefixed("history", arrays))
    model._operator.set_state(_unprefixed("operator", arrays))
    model._lift_map.set_state(_unprefixed("lifting", arrays))
    model._calibrator.set_state(_unprefixed("calibrator", arrays))
    model._threshold.set_state(arrays["threshold"])
    if model._gate is not None:
        model._gate.set_state(_unprefixed("gate", arrays))
    if model._mixture is not None:
        model._mixture.set_state(_unprefixed("mixture", arrays))
    if meta.get("has_last_fit"):
        model._last_fit = KoopmanFit(
            **{name: np.array(arrays[f"last_fit.{name}"]) for name in _FIT_FIELDS},
            n_pairs=int(arrays["last_fit.n_pairs"]),
        )
    if meta.get("has_last_signature"):
        model._last_signature = _signature_at(arrays, "last", 0)
    model._record_cursor = meta.get("record_cursor")
    if meta.get("has_pending_records"):
        model._pending_records = _PendingRecords(
            *(np.array(arrays[f"records.{name}"]) for name in _PendingRecords.FIELDS)
        )
    model._pending_scores = []
    for i in range(int(meta.get("n_pending_scores", 0))):
        origin, _, n_realised = (int(x) for x in arrays["scores.ints"][i])
        fields = {name: np.array(arrays[f"scores.{name}"][i]) for name in _SCORE_FIELDS}
        model._pending_scores.append(_PendingScore(origin=origin, n_realised=n_realised, **fields))
    if model._memory is not None:
        model._memory.set_state(meta["memory"], _unprefixed("memory", arrays))


def _json_params(model: EpisodicKoopman) -> dict[str, Any]:
    params = model._get_params()
    json.dumps(params)  # every constructor parameter is a plain JSON value
    return params


def save_model(model: EpisodicKoopman, path: str | Path) -> None:
    """Write ``model`` to ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    meta, arrays = model_state(model)
    index_bytes = arrays.pop("memory.faiss_index", None)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "class": type(model).__name__,
        "params": _json_params(model),
        "state": meta,
    }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr("manifest.json", json.dumps(manifest, indent=1))
            zf.writestr("state.npz", buffer.getvalue())
            if index_bytes is not None:
                zf.writestr("memory.faiss", np.asarray(index_bytes, dtype=np.uint8).tobytes())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_model(path: str | Path) -> EpisodicKoopman:
    """Read a model written by `save_model`."""
    from .forecaster import EpisodicKoopman

    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ValueError(f"{path} is not an episodic-koopman model file") from None
    with zf:
        names = set(zf.namelist())
        if "manifest.json" not in names or "state.npz" not in names:
            raise ValueError(f"{path} is not an episodic-koopman model file")
        manifest = json.loads(zf.read("manifest.json"))
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{path} is not an episodic-koopman model file")
        version = manifest.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ValueError(
                f"{path} has format version {version}; this library reads up to {FORMAT_VERSION}"
            )
        with np.load(io.BytesIO(zf.read("state.npz")), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        if "memory.faiss" in names:
            arrays["memory.faiss_index"] = np.frombuffer(zf.read("memory.faiss"), dtype=np.uint8)
    if manifest.get("class") != EpisodicKoopman.__name__:
        raise ValueError(f"{path} holds a {manifest.get('class')}, not an EpisodicKoopman")
    model = EpisodicKoopman(**manifest["params"])
    restore_state(model, manifest["state"], arrays)
    return model
