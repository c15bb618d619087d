"""How a memory's keys become FAISS scalar-quantizer codes (see `episodic_koopman.memory`).

With bounds (the largest magnitude each coordinate can take) a key costs a byte per
coordinate, 8 bits over ``[-bound, bound]``: a fixed range, no training on data, and
rounding is idempotent, so the index, the unindexed tail and a rebuild hold the same
values. Without bounds, half floats.

>>> import numpy as np
>>> codec = KeyCodec(2, np.array([1.0, 2.0]))
>>> codec.encode(np.array([[0.0, -2.0]])).tolist()
[[127, 0]]
>>> once = codec.round(np.array([[0.3, 1.1]]))
>>> np.array_equal(codec.round(once), once)
True
"""

from __future__ import annotations

import faiss
import numpy as np

_FP16 = faiss.ScalarQuantizer.QT_fp16
_SQ8 = faiss.ScalarQuantizer.QT_8bit


class KeyCodec:
    """How keys are rounded to the index's codes: 8 bits over fixed bounds, or float16."""

    def __init__(self, dim: int, bounds: np.ndarray | None) -> None:
        self.dim = dim
        self.bounds = None if bounds is None else np.asarray(bounds, dtype=np.float32)
        if self.bounds is not None:
            if self.bounds.shape != (dim,) or not np.all(np.isfinite(self.bounds)):
                raise ValueError(f"key_bounds needs {dim} finite values")
            if np.any(self.bounds <= 0):
                raise ValueError("key_bounds must be positive")
        self.qtype = _FP16 if self.bounds is None else _SQ8
        self._sq = faiss.ScalarQuantizer(dim, self.qtype)
        self._train(self._sq)
        self._code_size = int(self._sq.code_size)
        #: What a quantizer of these codes is made of (`quantizer` makes one).
        self.layout = (dim, int(self.qtype), None if bounds is None else self.bounds.tobytes())
        #: The code of the zero key, ``(1, code_size)``.
        self.zero_code = self.encode(np.zeros((1, dim), dtype=np.float32))

    def same_bounds(self, bounds: np.ndarray | None) -> bool:
        """Whether ``bounds`` make this codec (so that it need not be made again)."""
        if bounds is None or self.bounds is None:
            return bounds is None and self.bounds is None
        return bool(np.array_equal(np.asarray(bounds, dtype=np.float32), self.bounds))

    def _train(self, sq: faiss.ScalarQuantizer) -> None:
        if self.bounds is not None:  # QT_8bit: per-coordinate minimum, then range
            trained = np.concatenate([-self.bounds, 2 * self.bounds]).astype(np.float32)
            faiss.copy_array_to_vector(trained, sq.trained)

    def quantizer(self) -> faiss.ScalarQuantizer:
        """A new quantizer of these codes (trained: its range is the bounds)."""
        sq = faiss.ScalarQuantizer(self.dim, self.qtype)
        self._train(sq)
        return sq

    def new_index(self, hnsw_m: int | None) -> faiss.Index:
        """An empty flat (``hnsw_m=None``) or HNSW index holding these codes."""
        if hnsw_m is None:
            index = faiss.IndexScalarQuantizer(self.dim, self.qtype)
            storage = index
        else:
            index = faiss.IndexHNSWSQ(self.dim, self.qtype, hnsw_m)
            storage = faiss.downcast_index(index.storage)
        self._train(storage.sq)
        storage.is_trained = index.is_trained = True
        return index

    def round(self, keys: np.ndarray) -> np.ndarray:
        """Keys as the index stores them, as float32 ``(n, dim)``."""
        keys = np.ascontiguousarray(keys, dtype=np.float32).reshape(-1, self.dim)
        if self.bounds is None:
            return keys.astype(np.float16).astype(np.float32)
        # FAISS's encode and decode, called without their wrappers: an episode is filed at
        # every forecast, one key at a time, and the wrappers cost as much as the work.
        n = keys.shape[0]
        codes = np.empty((n, self._code_size), dtype=np.uint8)
        rounded = np.empty((n, self.dim), dtype=np.float32)
        if n:
            self._sq.compute_codes_c(faiss.swig_ptr(keys), faiss.swig_ptr(codes), n)
            self._sq.decode_c(faiss.swig_ptr(codes), faiss.swig_ptr(rounded), n)
        return rounded

    def encode(self, keys: np.ndarray) -> np.ndarray:
        """The codes of keys: ``(n, code_size)`` bytes."""
        keys = np.ascontiguousarray(keys, dtype=np.float32).reshape(-1, self.dim)
        if self.bounds is None:
            return keys.astype(np.float16).view(np.uint8)
        if keys.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.uint8)
        return self._sq.compute_codes(keys)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Keys from `encode`'s codes."""
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        if self.bounds is None:
            return codes.view(np.float16).astype(np.float32).reshape(-1, self.dim)
        if codes.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._sq.decode(codes)
