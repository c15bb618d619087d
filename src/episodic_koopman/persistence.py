"""Saving and loading models: a versioned single file, without pickle.

A saved model is a ZIP archive (stored, not compressed) of:

``manifest.json``
    ``{"format": "episodic-koopman", "format_version": 5, "class": ..., "params": {...},
    "state": {"model": {...}, "components": {name: {...}}}}``: the model's flat
    parameters (`EpisodicKoopman.to_flat`), and each component's JSON metadata.
``state.npz``
    Every array of the learned state, named ``<component>.<array>`` (NumPy format,
    loaded with ``allow_pickle=False``).
``<component>.<...>.faiss``
    FAISS indexes in FAISS's own format (``faiss.serialize_index``), one member per
    array whose name ends in ``faiss_index``.

The model and its components each own their state (`episodic_koopman.components`):
this module only iterates over them. Files are written to a temporary name and
renamed, so a crash never leaves a half-written model. A loaded model continues
bit-identically: same forecasts, same future updates.
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
import tempfile
import zipfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from . import __version__
from .components import prefixed, unprefixed

if TYPE_CHECKING:
    from .forecaster import EpisodicKoopman

FORMAT = "episodic-koopman"
FORMAT_VERSION = 5
_INDEX_SUFFIX = "faiss_index"
_INDEX_MEMBER = ".faiss"


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
    model.set_state(meta["model"], unprefixed("model", arrays))
    components = model.components()
    if sorted(components) != sorted(meta["components"]):
        raise ValueError(
            f"saved components {sorted(meta['components'])} do not match the model's "
            f"{sorted(components)}"
        )
    for name, component in components.items():
        component.set_state(meta["components"][name], unprefixed(name, arrays))


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

    `capture` is the only step that reads the model; `to_bytes` (ZIP and npz
    encoding) can then run anywhere, e.g. outside the lock that guards the model.
    """

    def __init__(self, manifest: str, arrays: dict[str, np.ndarray], indexes: dict[str, bytes]):
        self.manifest = manifest
        self.arrays = arrays
        self.indexes = indexes

    def to_bytes(self) -> bytes:
        """The model file's bytes, exactly as `save_model` writes them."""
        buffer = io.BytesIO()
        np.savez(buffer, **self.arrays)
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr("manifest.json", self.manifest)
            zf.writestr("state.npz", buffer.getbuffer())
            for member, index in self.indexes.items():
                zf.writestr(member, index)
        return out.getvalue()


def capture(model: EpisodicKoopman) -> CapturedModel:
    """Copy the model's state (its arrays may be views into live buffers)."""
    meta, arrays = model_state(model)
    indexes = {
        name.removesuffix(_INDEX_SUFFIX) + _INDEX_MEMBER.lstrip("."): np.asarray(
            arrays.pop(name), dtype=np.uint8
        ).tobytes()
        for name in [k for k in arrays if k.endswith(_INDEX_SUFFIX)]
    }
    params = model.to_flat()
    json.dumps(params)  # every parameter is a plain JSON value
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "class": type(model).__name__,
        "params": params,
        "state": meta,
    }
    copies = {name: np.array(array, copy=True) for name, array in arrays.items()}
    return CapturedModel(json.dumps(manifest, indent=1), copies, indexes)


# The header `np.savez` writes for a plain array (NumPy's format, version 1.0 to 3.0).
_NPY_HEADER = re.compile(
    r"\{'descr': '([<>|=][a-z]\d+)', 'fortran_order': False, 'shape': \(([0-9, ]*)\), \}"
)
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature ... name length, extra length


def read_npz(data: bytes) -> dict[str, np.ndarray]:
    """The arrays of an uncompressed ``.npz`` as `np.savez` writes them (what `np.load`
    returns, without pickle), read straight from the buffer.

    A model file holds some fifty small arrays, and `np.load` parses each header with
    ``ast.literal_eval``: that was a third of a model's load. Anything else than plain
    arrays in stored members goes through `np.load`.
    """
    view = memoryview(data)
    arrays: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            array = None
            if info.compress_type == zipfile.ZIP_STORED and info.filename.endswith(".npy"):
                array = _stored_array(view, info)
            if array is None:
                with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                    return {name: npz[name] for name in npz.files}
            arrays[info.filename.removesuffix(".npy")] = array
    return arrays


def _stored_array(view: memoryview, info: zipfile.ZipInfo) -> np.ndarray | None:
    at = info.header_offset
    signature, name_length, extra_length = _LOCAL_HEADER.unpack_from(view, at)
    if signature != b"PK\x03\x04":
        return None
    start = at + _LOCAL_HEADER.size + name_length + extra_length
    member = view[start : start + info.file_size]
    if bytes(member[:6]) != b"\x93NUMPY" or member[6] not in (1, 2, 3):
        return None
    size_bytes = 2 if member[6] == 1 else 4
    header_length = int.from_bytes(member[8 : 8 + size_bytes], "little")
    body = 8 + size_bytes + header_length
    match = _NPY_HEADER.match(bytes(member[8 + size_bytes : body]).decode("latin1"))
    if match is None:
        return None
    dtype = np.dtype(match.group(1))
    shape = tuple(int(part) for part in match.group(2).split(",") if part.strip())
    count = int(np.prod(shape, dtype=np.int64))
    if dtype.hasobject or body + count * dtype.itemsize != info.file_size:
        return None
    # A copy, as `np.load` gives: writable, and independent of the file's bytes.
    return np.frombuffer(member, dtype=dtype, count=count, offset=body).reshape(shape).copy()


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
        if "manifest.json" not in names or "state.npz" not in names:
            raise ValueError(f"{where} is not an episodic-koopman model file")
        manifest = json.loads(zf.read("manifest.json"))
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{where} is not an episodic-koopman model file")
        version = manifest.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ValueError(
                f"{where} has format version {version}; this library reads up to {FORMAT_VERSION}"
            )
        if version < FORMAT_VERSION:
            raise ValueError(
                f"{where} has format version {version}, written by an older episodic-koopman "
                f"(before {__version__}); this library reads version {FORMAT_VERSION}: "
                "refit the model from its observations"
            )
        arrays = read_npz(zf.read("state.npz"))
        for member in names:
            if member.endswith(_INDEX_MEMBER):
                name = member.removesuffix(_INDEX_MEMBER) + "." + _INDEX_SUFFIX
                arrays[name] = np.frombuffer(zf.read(member), dtype=np.uint8)
    if manifest.get("class") != EpisodicKoopman.__name__:
        raise ValueError(f"{where} holds a {manifest.get('class')}, not an EpisodicKoopman")
    model = EpisodicKoopman.from_flat(manifest["params"])
    restore_state(model, manifest["state"], arrays)
    return model
