"""Observables: online standardisation, delay (Hankel) embedding and liftings.

The operator never sees raw values. A stream of ``c`` channels is standardised
per channel, the last ``d`` standardised rows form a delay vector (time-major:
``[y_{t-d+1}, ..., y_t]``, each a block of ``c`` channels), and a lifting maps
the delay vector to the observables the operator evolves. Every lifting keeps
the delay vector itself as its first coordinates, so the forecast is always a
linear read-out of the newest block (`DelayEmbedding.readout`).

>>> import numpy as np
>>> emb = DelayEmbedding(delays=3, n_channels=1)
>>> history = np.arange(5.0).reshape(-1, 1)
>>> emb.snapshot(history, mean=np.zeros(1), scale=np.ones(1))
array([2., 3., 4.])
>>> emb.snapshots(history, mean=np.zeros(1), scale=np.ones(1)).shape
(3, 3)
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


class Standardizer:
    """Running per-channel mean and standard deviation (Welford, river's `stats.Var`).

    >>> s = Standardizer(n_channels=1)
    >>> for v in [1.0, 2.0, 3.0]:
    ...     s.update(np.array([v]))
    >>> mean, scale = s.current()
    >>> float(mean[0]), float(scale[0])
    (2.0, 1.0)
    """

    def __init__(self, n_channels: int) -> None:
        self.n_channels = n_channels
        # Welford's fields per channel, as plain floats: the count, the mean and the sum
        # of squared deviations (river's `stats.Var` keeps the same three and updates them
        # by the same operations; its objects cost as much as the rest of a step).
        self._n = 0.0
        self._means = [0.0] * n_channels
        self._squares = [0.0] * n_channels

    def update(self, values: np.ndarray) -> None:
        n = self._n = self._n + 1.0
        means, squares = self._means, self._squares
        for j, value in enumerate(values.tolist()):
            before = means[j]
            after = means[j] = before + (1.0 / n) * (value - before)
            squares[j] += (value - before) * (value - after)

    def current(self) -> tuple[np.ndarray, np.ndarray]:
        """The current mean and scale; a scale of 1 stands in for a zero spread."""
        n = self._n
        # The sample variance (ddof 1; 0 before two values), as `stats.Var.get` gives it, and
        # the rest in plain floats: the same IEEE operations as NumPy's (sqrt is exact).
        scales = []
        for mean, squares in zip(self._means, self._squares, strict=True):
            std = math.sqrt(max(squares / (n - 1), 0.0) if n > 1 else 0.0)
            scales.append(std if std > 1e-12 * max(abs(mean), 1.0) else 1.0)
        return np.array(self._means, dtype=np.float64), np.array(scales, dtype=np.float64)

    def get_state(self) -> np.ndarray:
        """Exact Welford state, one row ``(n, mean, S)`` per channel."""
        rows = [[self._n, m, s] for m, s in zip(self._means, self._squares, strict=True)]
        return np.array(rows, dtype=np.float64)

    def set_state(self, state: np.ndarray) -> None:
        state = np.asarray(state, dtype=np.float64)
        if state.shape[0] != self.n_channels:
            raise ValueError(f"scaler state has {state.shape[0]} channels, not {self.n_channels}")
        self._n = float(state[0, 0]) if state.shape[0] else 0.0
        self._means = [float(m) for m in state[:, 1]]
        self._squares = [float(s) for s in state[:, 2]]


class DelayEmbedding:
    """Delay (Hankel) vectors of ``delays`` consecutive standardised observations."""

    def __init__(self, delays: int, n_channels: int) -> None:
        self.delays = delays
        self.n_channels = n_channels

    @property
    def dimension(self) -> int:
        return self.delays * self.n_channels

    @property
    def readout(self) -> slice:
        """Coordinates of the newest observation inside a delay vector."""
        return slice(self.dimension - self.n_channels, self.dimension)

    def snapshot(self, history: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """Delay vector of the last ``delays`` rows of ``history`` (shape ``(L, c)``)."""
        rows = history[-self.delays :]
        return ((rows - mean) / scale).reshape(-1)

    def snapshots(self, history: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """All delay vectors of ``history``, oldest first: ``(L - delays + 1, delays * c)``."""
        standardised = (history - mean) / scale
        windows = sliding_window_view(standardised, (self.delays, self.n_channels))[:, 0]
        return windows.reshape(windows.shape[0], -1)


class Lifting(Protocol):
    """Maps delay vectors to observables; the first coordinates must be the delay vector."""

    def setup(self, n_inputs: int) -> None: ...

    def n_features(self, n_inputs: int) -> int: ...

    def transform(self, z: np.ndarray) -> np.ndarray: ...

    def get_state(self) -> dict[str, Any]: ...

    def set_state(self, state: dict[str, Any]) -> None: ...


class IdentityLifting:
    """The delay vector itself: plain Hankel DMD."""

    def setup(self, n_inputs: int) -> None:
        self.n_inputs = n_inputs

    def n_features(self, n_inputs: int) -> int:
        return n_inputs

    def transform(self, z: np.ndarray) -> np.ndarray:
        return z

    def get_state(self) -> dict[str, Any]:
        return {}

    def set_state(self, state: dict[str, Any]) -> None:
        return None


class RandomFourierLifting:
    """Delay vector plus random Fourier features ``sqrt(2/D) cos(W z + b)``.

    The features approximate a Gaussian (RBF) kernel of bandwidth
    ``bandwidth`` (in standardised units), as in extended DMD with a kernel
    dictionary. ``seed`` fixes ``W`` and ``b``.

    >>> lift = RandomFourierLifting(n_components=4, bandwidth=1.0, seed=0)
    >>> lift.setup(3)
    >>> lift.transform(np.zeros(3)).shape
    (7,)
    """

    def __init__(self, n_components: int = 64, bandwidth: float = 2.0, seed: int = 0) -> None:
        self.n_components = n_components
        self.bandwidth = bandwidth
        self.seed = seed

    def setup(self, n_inputs: int) -> None:
        rng = np.random.default_rng(self.seed)
        self.weights = rng.standard_normal((n_inputs, self.n_components)) / self.bandwidth
        self.offsets = rng.uniform(0.0, 2.0 * np.pi, self.n_components)

    def n_features(self, n_inputs: int) -> int:
        return n_inputs + self.n_components

    def transform(self, z: np.ndarray) -> np.ndarray:
        features = np.sqrt(2.0 / self.n_components) * np.cos(z @ self.weights + self.offsets)
        return np.concatenate([z, features], axis=-1)

    def get_state(self) -> dict[str, Any]:
        return {"weights": self.weights, "offsets": self.offsets}

    def set_state(self, state: dict[str, Any]) -> None:
        self.weights = np.asarray(state["weights"], dtype=np.float64)
        self.offsets = np.asarray(state["offsets"], dtype=np.float64)


def make_lifting(name: str, n_components: int, bandwidth: float, seed: int) -> Lifting:
    """Build the lifting called ``name`` (``"identity"`` or ``"rff"``)."""
    if name == "identity":
        return IdentityLifting()
    if name == "rff":
        return RandomFourierLifting(n_components=n_components, bandwidth=bandwidth, seed=seed)
    raise ValueError(f"lifting must be 'identity' or 'rff', got {name!r}")


class History:
    """The last ``length`` raw observations, readable as one contiguous slice.

    The buffer holds ``length + margin`` rows. Rows are appended until it is full;
    then the newest ``length - 1`` move to its front, once every ``margin + 1``
    appends. The newest ``k <= length`` rows are therefore always one view, and
    the buffer costs ``margin`` rows beyond what it holds: a short margin saves
    memory, a long one saves copying (``length - 1`` rows per ``margin + 1``
    appends).

    >>> h = History(length=3, n_channels=1, margin=1)
    >>> for v in [1.0, 2.0, 3.0, 4.0, 5.0]:
    ...     h.append(np.array([v]))
    >>> h.last(3).ravel().tolist()
    [3.0, 4.0, 5.0]
    >>> h.rows(np.array([2, 4])).ravel().tolist()
    [3.0, 5.0]
    """

    def __init__(self, length: int, n_channels: int, margin: int | None = None) -> None:
        self.length = length
        self.margin = max(1, length if margin is None else margin)
        self._buffer = np.zeros((length + self.margin, n_channels))
        self._start = 0  # absolute index of the observation in buffer row 0
        self.count = 0

    def append(self, values: np.ndarray) -> None:
        position = self.count - self._start
        if position == self._buffer.shape[0]:
            keep = self.length - 1
            self._buffer[:keep] = self._buffer[position - keep : position]
            self._start = self.count - keep
            position = keep
        self._buffer[position] = values
        self.count += 1

    def last(self, k: int) -> np.ndarray:
        """The newest ``k`` rows, oldest first (``k <= min(length, count)``)."""
        assert k <= min(self.length, self.count), "history holds fewer rows"
        end = self.count - self._start
        return self._buffer[end - k : end]

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """Rows at absolute observation ``indices`` (any shape), among the newest ``length``."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (
            indices.min() < self.count - self.length or indices.max() >= self.count
        ):
            raise IndexError("history row is no longer (or not yet) held")
        return self._buffer[indices - self._start]

    def windows(self, ends: np.ndarray, width: int) -> np.ndarray:
        """The ``width`` rows ending at each of ``ends``: ``(B, width, c)``, a new array.

        Equal to ``rows(ends[:, None] + arange(1 - width, 1))``; consecutive ends (a
        model's episodes, one per origin) are one strided copy instead of a gather
        through a ``(B, width)`` index array.
        """
        ends = np.asarray(ends, dtype=np.int64).ravel()
        if ends.size < 2 or ends[-1] - ends[0] != ends.size - 1 or np.any(np.diff(ends) != 1):
            return self.rows(ends[:, None] + np.arange(1 - width, 1))
        first, last = int(ends[0]) - width + 1, int(ends[-1])
        if first < self.count - self.length or last >= self.count:
            raise IndexError("history row is no longer (or not yet) held")
        held = self._buffer[first - self._start : last + 1 - self._start]
        view = np.lib.stride_tricks.sliding_window_view(held, width, axis=0)  # (B, c, width)
        return np.ascontiguousarray(view.transpose(0, 2, 1))

    def get_state(self) -> dict[str, np.ndarray]:
        # The rows held, oldest first: where the buffer was last shifted leaves no trace.
        held = self.last(min(self.count, self.length)).copy()
        return {"rows": held, "count": np.array(self.count, dtype=np.int64)}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        rows = np.asarray(state["rows"], dtype=np.float64)
        self._buffer = np.zeros((self.length + self.margin, rows.shape[1]))
        self._buffer[: rows.shape[0]] = rows
        self.count = int(state["count"])
        self._start = self.count - rows.shape[0]
