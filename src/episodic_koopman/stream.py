"""The stream component: the layout of observations, what was learned, and missing values.

Missing values (NaN or inf) follow one vocabulary in the library and in batch:

``"error"``
    Reject the observation (and its whole batch), changing nothing.
``"drop"``
    Leave it out: the model learns the next observation as if it followed directly.
``"ffill"``
    Replace it by the last finite value of its channel.

Batch forecasting (`episodic_koopman.batch`) adds ``"interpolate"`` and ``"zero"``,
which need the whole series or its timestamps. Older names are accepted as
aliases: ``"raise"`` for ``"error"`` and ``"skip"`` for ``"drop"``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import validation as v
from .components import State

MISSING_POLICIES = ("error", "drop", "ffill")
MISSING_ALIASES = {"raise": "error", "skip": "drop"}


def missing_policy(name: Any, policies: tuple[str, ...] = MISSING_POLICIES) -> str:
    """The canonical name of a missing-value policy (old names are aliases)."""
    canonical = MISSING_ALIASES.get(name, name) if isinstance(name, str) else name
    if canonical not in policies:
        raise ValueError(
            f"missing must be one of {list(policies)} (aliases: "
            f"{', '.join(f'{k!r} for {v!r}' for k, v in MISSING_ALIASES.items())}), got {name!r}"
        )
    return canonical


class Stream:
    """Channels, counts and the last finite observation of the learned stream."""

    def __init__(self) -> None:
        self.channels: list[str] | None = None
        self.scalar: bool | None = None
        self.n = 0  # observations learned
        self.n_missing = 0  # observations dropped or filled
        self.last_finite: np.ndarray | None = None

    def apply_missing(self, rows: np.ndarray, policy: str) -> tuple[np.ndarray, int]:
        """Check finiteness of the whole batch and apply ``policy`` (no mutation).

        Returns the rows to learn and how many observations were dropped or filled.
        """
        v.check_magnitude(rows)
        bad = v.first_non_finite(rows)
        if bad is None:
            return rows, 0
        if policy == "error":
            row, col = bad
            where = f"observation {row}" if rows.shape[0] > 1 else "observation"
            channel = f", channel {self.channels[col]!r}" if self.channels else ""
            raise ValueError(
                f"{where}{channel} is {rows[row, col]!r}; values must be finite "
                "(or construct the model with missing='drop' or 'ffill')"
            )
        finite_rows = np.all(np.isfinite(rows), axis=1)
        if policy == "drop":
            return rows[finite_rows], int(np.count_nonzero(~finite_rows))
        filled = rows.copy()
        last = None if self.last_finite is None else self.last_finite.copy()
        for i in range(filled.shape[0]):
            if last is not None:
                filled[i] = np.where(np.isfinite(filled[i]), filled[i], last)
            if not np.all(np.isfinite(filled[i])):
                raise ValueError(
                    f"observation {i} is missing before any finite value to fill it with"
                )
            last = filled[i]
        return filled, int(np.count_nonzero(~finite_rows))

    def get_state(self) -> State:
        meta = {
            "channels": self.channels,
            "scalar": self.scalar,
            "n": self.n,
            "n_missing": self.n_missing,
            "has_last": self.last_finite is not None,
        }
        arrays = {} if self.last_finite is None else {"last_finite": self.last_finite}
        return meta, arrays

    def set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.channels = meta["channels"]
        self.scalar = meta["scalar"]
        self.n = int(meta["n"])
        self.n_missing = int(meta["n_missing"])
        self.last_finite = None
        if meta["has_last"]:
            self.last_finite = np.array(arrays["last_finite"], dtype=np.float64)
