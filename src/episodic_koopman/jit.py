"""`kernel`: how the engine compiles its small numeric loops, in one place.

A scored tick makes hundreds of NumPy calls on arrays of a few dozen floats, where
each call's dispatch costs more than its arithmetic. A kernel runs such a loop as
machine code instead. The options are chosen for reproducibility:

- no ``fastmath``: LLVM may not reassociate or contract, so a loop adds in the order
  it is written and gives the same floats on every machine and run;
- ``error_model="numpy"``: division by zero gives inf or nan as NumPy does, not an
  exception;
- ``cache=True`` for functions defined in a file: compiled code is stored beside
  the module (or in the user's cache when that is read-only), so only the first
  process on a machine compiles. A function typed at a prompt is compiled uncached.

>>> import numpy as np
>>> @kernel
... def total(values):
...     s = 0.0
...     for v in values:
...         s += v
...     return s
>>> total(np.array([0.1, 0.2, 0.3]))
0.6000000000000001
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from numba import njit

F = TypeVar("F", bound=Callable[..., object])


def kernel(function: F) -> F:
    """Compile ``function`` with the engine's reproducible options (see the module)."""
    cache = os.path.isfile(function.__code__.co_filename)
    compile_ = njit(cache=cache, nogil=True, error_model="numpy", boundscheck=False)
    return compile_(function)  # type: ignore[no-any-return]


__all__ = ["kernel"]
