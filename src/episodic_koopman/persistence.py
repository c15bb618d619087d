"""Saving and loading models: a versioned single file, without pickle.

A saved model (format version 5) is a ZIP archive (stored, not compressed) of:

``manifest.json``
    ``{"format": "episodic-koopman", "format_version": 5, "class": ..., "params": {...},
    "state": {"model": {...}, "components": {name: {...}}}, "arrays": {...}}``: the
    model's flat parameters (`EpisodicKoopman.to_flat`), each component's JSON
    metadata, and where each array lies in ``arrays.bin``: ``name: [dtype, shape,
    offset]`` (dtype as NumPy's little-endian string, e.g. ``"<f8"``).
``arrays.bin``
    Every array of the learned state, named ``<component>.<array>``, C-ordered and
    8-byte aligned, one after another (FAISS indexes, where saved, are ``uint8`` arrays
    in FAISS's own format, ``faiss.serialize_index``).

One raw member instead of an ``.npz`` (format 4: a ZIP inside the ZIP, a member and an
``ast``-parsed header per array) makes a model's load and save a few slices: loading
snapshots is most of a service's restart, and encoding one holds the GIL that reads
need.

The model and its components each own their state (`episodic_koopman.components`):
this module only iterates over them. Files are written to a temporary name and
renamed, so a crash never leaves a half-written model. A loaded model continues
bit-identically: same forecasts, same future updates.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
import zipfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from . import __version__
from .components import prefixed
from .flat_params import stored_params

if TYPE_CHECKING:
    from .forecaster import EpisodicKoopman

FORMAT = "episodic-koopman"
#: 5: one raw arrays member; the fit and recall in force (`in_force`); the intervals'
#: local scales and p-values.
FORMAT_VERSION = 5
#: The oldest format this library reads. A format-4 model lacks state that version 5
#: forecasts from (the fit in force, the intervals' scales): it is refitted from its
#: observations (the service replays them).
OLDEST_FORMAT_VERSION = 5
_ALIGN = 8
_ARRAYS_MEMBER = "arrays.bin"
_INDEX_SUFFIX = "faiss_index"


def model_state(model: EpisodicKoopman) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The model's learned state as JSON metadata and named arrays, component by component."""
    own_meta, own_arrays = model.get_state()
    meta: dict[str, Any] = {"model": own_meta, "components": {}}
    arrays = prefixed("model", own_arrays)
    for name, component in model.components().items():
        component_meta, component_arrays = component.get_state()
        meta["components"][name] = component_meta
        arrays |= prefixed(name, component_arrays)
    return meta, arrays


def restore_state(
    model: EpisodicKoopman, meta: dict[str, Any], arrays: dict[str, np.ndarray]
) -> None:
    """Inverse of `model_state` on a freshly constructed model with the same parameters."""
    by_owner: dict[str, dict[str, np.ndarray]] = {}
    for name, array in arrays.items():  # one pass, not one per component
        owner, _, rest = name.partition(".")
        by_owner.setdefault(owner, {})[rest] = array
    model.set_state(meta["model"], by_owner.get("model", {}))
    components = model.components()
    if sorted(components) != sorted(meta["components"]):
        raise ValueError(
            f"saved components {sorted(meta['components'])} do not match the model's "
            f"{sorted(components)}"
        )
    for name, component in components.items():
        component.set_state(meta["components"][name], by_owner.get(name, {}))


def save_model(model: EpisodicKoopman, path: str | Path) -> None:
    """Write ``model`` to ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    data = model_to_bytes(model)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as raw:
            raw.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class CapturedModel:
    """A model's saved form, frozen: copies of its state, independent of the live model.

    `capture` is the only step that reads the model; `to_bytes` (laying the arrays out
    and writing the ZIP) can then run anywhere, e.g. outside the lock that guards the
    model.
    """

    def __init__(self, manifest: str, arrays: list[np.ndarray]) -> None:
        self.manifest = manifest
        self.arrays = arrays  # in ``arrays.bin`` order, each C-contiguous little-endian

    def to_bytes(self) -> bytes:
        """The model file's bytes, exactly as `save_model` writes them."""
        parts: list[bytes | memoryview] = []
        size = 0
        for array in self.arrays:
            pad = -size % _ALIGN
            if pad:
                parts.append(bytes(pad))
            parts.append(memoryview(array).cast("B") if array.size else b"")
            size += pad + array.nbytes
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr(_member("manifest.json"), self.manifest)
            zf.writestr(_member(_ARRAYS_MEMBER), b"".join(parts))
        return out.getvalue()


def _member(name: str) -> zipfile.ZipInfo:
    """A member with a fixed timestamp: `writestr` with a bare name stamps the current
    time, so the same model saved two seconds apart would give different bytes."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o600 << 16  # what `writestr` gives a bare name
    return info


def capture(model: EpisodicKoopman) -> CapturedModel:
    """Copy the model's state (its arrays may be views into live buffers)."""
    meta, arrays = model_state(model)
    params = model.to_flat()
    json.dumps(params)  # every parameter is a plain JSON value
    copies: list[np.ndarray] = []
    layout: dict[str, list[Any]] = {}
    offset = 0
    for name in sorted(arrays):  # by name: equal states give equal bytes
        array = np.asarray(arrays[name])
        if array.dtype.hasobject or array.dtype.fields is not None:
            raise TypeError(f"{name}: only plain arrays are saved, not {array.dtype}")
        dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
        copy = np.array(array, dtype=dtype, order="C", copy=True)
        offset += -offset % _ALIGN
        layout[name] = [copy.dtype.str, list(copy.shape), offset]
        offset += copy.nbytes
        copies.append(copy)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "class": type(model).__name__,
        "params": params,
        "state": meta,
        "arrays": layout,
    }
    return CapturedModel(json.dumps(manifest, separators=(",", ":")), copies)


def read_arrays(data: bytes, layout: dict[str, list[Any]]) -> dict[str, np.ndarray]:
    """The arrays of an ``arrays.bin`` member, as its manifest lays them out (copies:
    writable, and independent of ``data``)."""
    arrays: dict[str, np.ndarray] = {}
    for name, (dtype_str, shape, offset) in layout.items():
        dtype = np.dtype(dtype_str)
        if dtype.hasobject or dtype.fields is not None:
            raise ValueError(f"{name}: not a plain array ({dtype_str})")
        count = math.prod(shape)  # (np.prod costs microseconds per call: fifty arrays)
        if offset < 0 or offset + count * dtype.itemsize > len(data):
            raise ValueError(f"{name} lies outside the saved arrays")
        array = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
        arrays[name] = array.reshape(shape).copy()
    return arrays


def model_to_bytes(model: EpisodicKoopman) -> bytes:
    """The bytes `save_model` would write (a file's content, for callers that store it)."""
    return capture(model).to_bytes()


def model_from_bytes(data: bytes) -> EpisodicKoopman:
    """Inverse of `model_to_bytes`."""
    return load_model(io.BytesIO(data))


def load_model(path: str | Path | IO[bytes]) -> EpisodicKoopman:
    """Read a model written by `save_model` (from a path or a binary file object)."""
    from .forecaster import EpisodicKoopman

    where = path if isinstance(path, (str, Path)) else "the data"
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ValueError(f"{where} is not an episodic-koopman model file") from None
    with zf:
        names = set(zf.namelist())
        if "manifest.json" not in names:
            raise ValueError(f"{where} is not an episodic-koopman model file")
        manifest = json.loads(zf.read("manifest.json"))
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{where} is not an episodic-koopman model file")
        version = manifest.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ValueError(
                f"{where} has format version {version}; this library reads up to {FORMAT_VERSION}"
            )
        if version < OLDEST_FORMAT_VERSION:
            raise ValueError(
                f"{where} has format version {version}, written by an older episodic-koopman "
                f"(before {__version__}); this library reads versions {OLDEST_FORMAT_VERSION} "
                f"to {FORMAT_VERSION}: refit the model from its observations"
            )
        if _ARRAYS_MEMBER not in names or not isinstance(manifest.get("arrays"), dict):
            raise ValueError(f"{where} is not an episodic-koopman model file")
        arrays = read_arrays(zf.read(_ARRAYS_MEMBER), manifest["arrays"])
    if manifest.get("class") != EpisodicKoopman.__name__:
        raise ValueError(f"{where} holds a {manifest.get('class')}, not an EpisodicKoopman")
    model = EpisodicKoopman.from_flat(stored_params(manifest.get("params")))
    restore_state(model, manifest["state"], arrays)
    return model
