"""`einsum`: NumPy's C einsum, called without its Python wrapper.

Without ``optimize``, ``np.einsum`` only forwards its arguments to this C function,
so the results are the same floats. The forecast makes about ten small einsums
(the AR experts, the analog corrections, the query's state window), where the
wrapper's dispatch cost a third of each call.
"""

from __future__ import annotations

try:  # NumPy >= 2
    from numpy._core.multiarray import c_einsum as einsum  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - older or changed NumPy: the public function
    from numpy import einsum

__all__ = ["einsum"]
