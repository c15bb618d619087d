"""Checks on a saved state before a component takes it.

Compiled kernels index a component's arrays without bounds checks, so a restored
array of the wrong shape (or a count beyond its window) would read or write past
the end of a buffer instead of raising. Every ``set_state``/``restore`` whose
state a kernel indexes therefore reads its arrays through `state_array` and its
counts through `state_count` first, and assigns only once all of them passed: a
bad state raises a `ValueError` naming the field and leaves the component as it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

#: A shape to check against: an int is required exactly; ``None`` accepts any length.
Shape = tuple[int | None, ...]


def state_array(
    owner: str,
    arrays: Mapping[str, Any],
    name: str,
    shape: Shape,
    dtype: type = np.float64,
) -> np.ndarray:
    """A C-contiguous copy of ``arrays[name]`` as ``dtype``, once its shape matches.

    Floats take any real numeric array, complex ones any numeric array; integers only
    integer ones (a float count would be truncated silently); booleans only booleans.
    """
    if name not in arrays:
        raise ValueError(f"{owner}: the saved state has no {name!r}")
    raw = np.asarray(arrays[name])
    if np.issubdtype(dtype, np.bool_):
        kinds = "b"
    elif np.issubdtype(dtype, np.integer):
        kinds = "iu"
    elif np.issubdtype(dtype, np.complexfloating):
        kinds = "iufc"
    else:
        kinds = "iuf"
    if raw.dtype.kind not in kinds:
        raise ValueError(f"{owner}: {name!r} must hold {np.dtype(dtype).name}, got {raw.dtype}")
    shown = tuple("*" if n is None else n for n in shape)
    if raw.ndim != len(shape) or any(
        n is not None and n != m for n, m in zip(shape, raw.shape, strict=True)
    ):
        raise ValueError(f"{owner}: {name!r} must have shape {shown}, got {raw.shape}")
    return np.array(raw, dtype=dtype, order="C")


def state_count(owner: str, name: str, value: Any, low: int = 0, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]`` (no upper bound for ``None``)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise ValueError(f"{owner}: {name!r} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{owner}: {name!r} must be in {bound}, got {value}")
    return int(value)


__all__ = ["Shape", "state_array", "state_count"]
