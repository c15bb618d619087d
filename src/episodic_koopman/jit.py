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

numba keys a kernel's cache on its own file alone, yet a kernel's machine code holds
the kernels it calls from other modules. So the cached kernels beside the package
are swept whenever any of its sources changes (`sweep_stale_kernels`): an edit to a
helper kernel can never run beside callers compiled against its old body.

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

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from numba import njit

F = TypeVar("F", bound=Callable[..., object])

_PACKAGE = Path(__file__).resolve().parent
_STAMP = _PACKAGE / "__pycache__" / "kernels.stamp"


def sweep_stale_kernels(package: Path = _PACKAGE, stamp: Path = _STAMP) -> bool:
    """Remove the package's cached kernels if its sources changed since they were
    stamped; True if it swept. A read-only install (whose kernels numba caches in the
    user's directory, and whose sources do not change) is left alone."""
    sources = sorted(package.rglob("*.py"))
    digest = hashlib.blake2b(digest_size=16)
    for source in sources:
        info = source.stat()
        digest.update(f"{source.relative_to(package)}:{info.st_mtime_ns}:{info.st_size};".encode())
    fingerprint = digest.hexdigest()
    try:
        if stamp.read_text() == fingerprint:
            return False
    except OSError:
        pass
    try:
        for cached in (*package.rglob("__pycache__/*.nbi"), *package.rglob("__pycache__/*.nbc")):
            cached.unlink(missing_ok=True)
        stamp.parent.mkdir(exist_ok=True)
        stamp.write_text(fingerprint)
    except OSError:
        return False
    return True


sweep_stale_kernels()


def kernel(function: F) -> F:
    """Compile ``function`` with the engine's reproducible options (see the module)."""
    cache = os.path.isfile(function.__code__.co_filename)
    compile_ = njit(cache=cache, nogil=True, error_model="numpy", boundscheck=False)
    return compile_(function)  # type: ignore[no-any-return]


__all__ = ["kernel", "sweep_stale_kernels"]
