"""Input checks that run before any state changes.

Every public method of the forecaster validates its whole input first, so a
bad value raises a `ValueError` or `TypeError` that names the problem and
leaves the model exactly as it was.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def is_real_number(value: Any) -> bool:
    """True for ints, floats and NumPy real scalars (0-d arrays too), but not bools."""
    if isinstance(value, bool | np.bool_):
        return False
    if isinstance(value, np.ndarray):
        return (
            value.ndim == 0 and np.issubdtype(value.dtype, np.number) and not np.iscomplexobj(value)
        )
    return isinstance(value, numbers.Real)


def check_positive_int(name: str, value: Any, minimum: int = 1, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return int(value)


def check_fraction(name: str, value: Any, low: float = 0.0, high: float = 1.0) -> float:
    if not is_real_number(value) or not (low < float(value) < high):
        raise ValueError(
            f"{name} must be a number strictly between {low} and {high}, got {value!r}"
        )
    return float(value)


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_horizon(horizon: Any, maximum: int) -> int:
    return check_positive_int("horizon", horizon, 1, maximum)


def coerce_scalar(y: Any, where: str = "y") -> float:
    """``y`` as a float; ``TypeError`` if it is not a real number (NaN passes through)."""
    if not is_real_number(y):
        raise TypeError(f"{where} must be a real number, got {type(y).__name__} {y!r}")
    return float(y)


def coerce_observation(
    y: Any, channels: list[str] | None, scalar: bool | None
) -> tuple[np.ndarray, list[str] | None, bool]:
    """One observation as a float64 vector in channel order.

    ``channels``/``scalar`` describe what the model has seen so far (``None``
    before the first observation). Returns ``(values, channels, scalar)``;
    values may hold NaN, and the caller applies the missing-value policy.
    """
    if isinstance(y, Mapping):
        if scalar:
            raise TypeError("this model learns a single series; got a dict of channels")
        if not y:
            raise ValueError("a multichannel observation must have at least one channel")
        names = [str(k) for k in y]
        if len(set(names)) != len(names):
            raise ValueError("channel names must be distinct after conversion to str")
        if channels is not None and set(names) != set(channels):
            missing = sorted(set(channels) - set(names))
            extra = sorted(set(names) - set(channels))
            raise ValueError(
                f"channels differ from the first observation's: missing {missing}, extra {extra}"
            )
        order = channels if channels is not None else names
        by_name = {str(k): v for k, v in y.items()}
        values = np.array(
            [coerce_scalar(by_name[name], where=f"y[{name!r}]") for name in order], dtype=np.float64
        )
        return values, order, False
    if scalar is False:
        raise TypeError(
            f"this model learns channels {channels}; pass a dict of channel to value, "
            f"got {type(y).__name__}"
        )
    return np.array([coerce_scalar(y)], dtype=np.float64), None, True


def coerce_many(
    values: Any, channels: list[str] | None, scalar: bool | None
) -> tuple[np.ndarray, list[str] | None, bool]:
    """A batch of observations as an ``(n, c)`` float64 array (NaN allowed)."""
    if isinstance(values, Mapping):
        if scalar:
            raise TypeError("this model learns a single series; got a dict of channel arrays")
        names = [str(k) for k in values]
        if channels is not None and set(names) != set(channels):
            raise ValueError(
                f"channels {sorted(names)} differ from the model's channels {sorted(channels)}"
            )
        order = channels if channels is not None else names
        by_name = {str(k): v for k, v in values.items()}
        columns = [_numeric_1d(by_name[name], f"values[{name!r}]") for name in order]
        lengths = {c.shape[0] for c in columns}
        if len(lengths) > 1:
            raise ValueError(f"channel arrays have different lengths: {sorted(lengths)}")
        return np.column_stack(columns) if columns else np.zeros((0, 0)), order, False
    if isinstance(values, np.ndarray) and values.ndim == 2:
        if scalar:
            if values.shape[1] != 1:
                raise ValueError(f"expected a 1-D array for a single series, got {values.shape}")
            return _numeric_2d(values), None, True
        if channels is None:
            raise ValueError(
                "a 2-D array needs known channels: learn a dict first or pass a dict of arrays"
            )
        if values.shape[1] != len(channels):
            raise ValueError(f"expected {len(channels)} columns {channels}, got {values.shape[1]}")
        return _numeric_2d(values), channels, False
    if isinstance(values, Sequence | np.ndarray) and not isinstance(values, str | bytes):
        items = list(values)
        if items and all(isinstance(v, Mapping) for v in items):
            rows = []
            for i, item in enumerate(items):
                try:
                    row, channels, scalar = coerce_observation(item, channels, scalar)
                except (TypeError, ValueError) as exc:
                    raise type(exc)(f"observation {i}: {exc}") from None
                rows.append(row)
            return np.vstack(rows), channels, False
        if scalar is False:
            raise TypeError(f"this model learns channels {channels}; pass dicts or a 2-D array")
        return _numeric_1d(values, "values")[:, None], None, True
    raise TypeError(f"values must be an array, a sequence or a dict, got {type(values).__name__}")


def _numeric_1d(values: Any, where: str) -> np.ndarray:
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise ValueError(f"{where} must be 1-D, got shape {values.shape}")
        if not (
            np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)
        ):
            raise TypeError(f"{where} must hold real numbers, got dtype {values.dtype}")
        return values.astype(np.float64)
    out = np.empty(len(values))
    for i, v in enumerate(values):
        out[i] = coerce_scalar(v, where=f"{where}[{i}]")
    return out


def _numeric_2d(values: np.ndarray) -> np.ndarray:
    if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)):
        raise TypeError(f"values must hold real numbers, got dtype {values.dtype}")
    return values.astype(np.float64)


#: Largest magnitude accepted: squares and sums of squares of larger values overflow float64.
MAX_ABS_VALUE = 1e150


def first_non_finite(values: np.ndarray) -> tuple[int, int] | None:
    """Position ``(row, column)`` of the first NaN or inf, or ``None``."""
    bad = ~np.isfinite(values)
    if not bad.any():
        return None
    row, col = np.argwhere(bad)[0]
    return int(row), int(col)


def check_magnitude(values: np.ndarray) -> None:
    """Reject finite values too large to square safely (NaN is handled by the caller)."""
    with np.errstate(invalid="ignore"):
        big = np.abs(values) > MAX_ABS_VALUE
    if big.any():
        row, col = np.argwhere(big)[0]
        raise ValueError(
            f"observation {int(row)} is {values[row, col]!r}: magnitudes above "
            f"{MAX_ABS_VALUE:g} overflow the model's sums of squares; rescale the series"
        )


def is_finite_number(x: float) -> bool:
    return math.isfinite(x)
