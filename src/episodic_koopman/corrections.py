"""Corrections: what followed the matched episodes, turned into a forecast.

`episodic_koopman.recall` matches the present against memory and weights the matches
by attention; a correction (`Residual`, `Analog` or `Transfer`, one per memory
expert) turns those episodes and weights into ``(mean, spread)`` over the horizon.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .analog_replay import ALIGNMENT_CODES, analog_forecast
from .einsum import einsum
from .koopman_fit import stabilize_eigenvalues
from .recall import Alignment


@dataclass(frozen=True)
class RecallContext:
    """What a strategy may use about the present (nothing after the forecast origin)."""

    plain: np.ndarray  # (H, c) plain Koopman forecast, raw units
    history: np.ndarray  # (d, c) the last d raw observations
    ref_mean: np.ndarray  # (c,) current standardisation
    ref_scale: np.ndarray  # (c,)
    lift: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # raw window -> psi
    readout: slice
    stabilize: str


class Correction(Protocol):
    """Turns matched episodes and attention weights into ``(mean, spread)``, each ``(H, c)``."""

    name: str

    def correct(
        self, context: RecallContext, records: dict[str, np.ndarray], weights: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]: ...


def _extend(values: np.ndarray, horizon: int) -> np.ndarray:
    """Cut ``(n, H_mem, c)`` episode tracks to ``horizon``, holding the last step beyond."""
    if values.shape[1] >= horizon:
        return values[:, :horizon]
    tail = np.repeat(values[:, -1:], horizon - values.shape[1], axis=1)
    return np.concatenate([values, tail], axis=1)


def _weighted(tracks: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = einsum("e,ehc->hc", weights, tracks)
    spread = np.sqrt(einsum("e,ehc->hc", weights, (tracks - mean) ** 2))
    return mean, spread


def _window_mean(windows: np.ndarray) -> np.ndarray:
    """``windows.mean(axis=-2, keepdims=True)``, the same floats without its dispatch."""
    return np.add.reduce(windows, axis=-2, keepdims=True) / windows.shape[-2]


def _window_std(windows: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``windows.std(axis=-2, keepdims=True)`` from its mean: the same steps as NumPy's."""
    centered = windows - mean
    return np.sqrt(np.add.reduce(centered * centered, axis=-2, keepdims=True) / windows.shape[-2])


def align(
    continuation: np.ndarray, history_then: np.ndarray, history_now: np.ndarray, how: Alignment
) -> np.ndarray:
    """Map what followed past windows to the present level (and scale), per channel.

    ``continuation`` is ``(..., H, c)``, ``history_then`` ``(..., d, c)`` (the
    matched windows) and ``history_now`` ``(d, c)``. ``zscore`` matches the mean
    and standard deviation of the delay windows, ``additive`` the means, and
    ``multiplicative`` scales by the ratio of the means (epidemic curves scale). It
    falls back to additive where a mean is not positive. ``last`` matches the last
    values, and ``none`` replays the continuation as stored.
    """
    if how == "none":
        return continuation
    if how == "last":
        return continuation - history_then[..., -1:, :] + history_now[-1:, :]
    if how == "zscore" and history_then.ndim == 3:
        # The matched windows and the present one in one pass: each window is still
        # reduced on its own, so the floats are those of one window at a time.
        both = np.concatenate([history_then, history_now[None]])
        mean = _window_mean(both)
        std = _window_std(both, mean)
        return _zscored(continuation, mean[:-1], std[:-1], mean[-1], std[-1])
    mean_then = _window_mean(history_then)
    mean_now = _window_mean(history_now)
    if how == "additive":
        return continuation - mean_then + mean_now
    if how == "multiplicative":
        positive = (mean_then > 0) & (mean_now > 0)
        ratio = np.where(positive, mean_now / np.where(positive, mean_then, 1.0), 1.0)
        return np.where(positive, continuation * ratio, continuation - mean_then + mean_now)
    if how == "zscore":
        std_then = _window_std(history_then, mean_then)
        std_now = _window_std(history_now, mean_now)
        return _zscored(continuation, mean_then, std_then, mean_now, std_now)
    raise ValueError(f"unknown alignment {how!r}")


def _zscored(
    continuation: np.ndarray,
    mean_then: np.ndarray,
    std_then: np.ndarray,
    mean_now: np.ndarray,
    std_now: np.ndarray,
) -> np.ndarray:
    """`align`'s ``zscore`` from the windows' means and standard deviations."""
    ok = std_then > 1e-12 * np.maximum(np.abs(mean_then), 1.0)
    if ok.all():  # no flat window: the quotients `where` would pick, without its calls
        ratio = std_now / std_then
    else:
        ratio = np.where(ok, std_now / np.where(ok, std_then, 1.0), 1.0)
    return (continuation - mean_then) * ratio + mean_now


class Residual:
    """Add the attention-weighted errors that the matched episodes' operators made.

    Errors are stored in raw units and rescaled by the ratio of the current to
    the episode's standardisation scale.
    """

    name = "residual"

    def correct(
        self, context: RecallContext, records: dict[str, np.ndarray], weights: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        horizon = context.plain.shape[0]
        errors = (records["continuation"] - records["forecast"]) / records["ref_scale"][:, None, :]
        errors = _extend(errors, horizon) * context.ref_scale
        delta, spread = _weighted(errors, weights)
        return context.plain + delta, spread


class Analog:
    """Replay what followed each matched window, aligned to the present level.

    The mean is ``plain + blend * (analog - plain)``: ``blend=1`` is the pure
    analog forecast. The arithmetic is `align` and `_weighted`'s, in one compiled
    pass (`episodic_koopman.analog_replay`).
    """

    name = "analog"

    def __init__(self, alignment: Alignment = "zscore", blend: float = 1.0) -> None:
        self.alignment = alignment
        self.blend = blend

    def correct(
        self, context: RecallContext, records: dict[str, np.ndarray], weights: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        how = ALIGNMENT_CODES.get(self.alignment)
        if how is None:
            raise ValueError(f"unknown alignment {self.alignment!r}")
        history, plain = records["history"], context.plain
        # Align on as many recent observations as the episodes stored (their state window).
        now = context.history[-history.shape[1] :]
        if plain.size == 1:
            # One output: NumPy's einsum takes a SIMD dot product, in another order.
            return self._numpy_correct(plain, records["continuation"], history, now, weights)
        return analog_forecast(
            records["continuation"], history, now, weights, plain, how, float(self.blend)
        )

    def _numpy_correct(
        self,
        plain: np.ndarray,
        continuation: np.ndarray,
        history: np.ndarray,
        now: np.ndarray,
        weights: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """`correct` by NumPy: `align`, `_extend` and `_weighted`."""
        horizon = plain.shape[0]
        tracks = align(continuation, history, now, self.alignment)
        analog, spread = _weighted(_extend(tracks, horizon), weights)
        if horizon > tracks.shape[1]:
            # Beyond the stored continuation, carry the analog's offset from the plain forecast.
            offset = analog[tracks.shape[1] - 1] - plain[tracks.shape[1] - 1]
            analog[tracks.shape[1] :] = plain[tracks.shape[1] :] + offset
        return plain + self.blend * (analog - plain), spread


class Transfer:
    """Propagate the current state with the operator fitted just after each matched window.

    Each episode keeps the modes and eigenvalues of the fit taken when its
    forecast horizon had passed, with that fit's standardisation. The current
    delay window is standardised and lifted in that frame, propagated, and mapped
    back.
    """

    name = "transfer"

    def correct(
        self, context: RecallContext, records: dict[str, np.ndarray], weights: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        horizon = context.plain.shape[0]
        steps = np.arange(1, horizon + 1)[:, None]
        tracks = []
        for i in range(weights.shape[0]):
            rank = int(records["succ_rank"][i])
            mean, scale = records["succ_ref_mean"][i], records["succ_ref_scale"][i]
            if rank == 0:
                tracks.append(np.repeat(mean[None, :], horizon, axis=0))
                continue
            modes = records["succ_modes"][i][:, :rank]
            lam = stabilize_eigenvalues(records["succ_eigenvalues"][i][:rank], context.stabilize)
            psi = context.lift(context.history, mean, scale)
            b = np.linalg.lstsq(modes, psi.astype(np.complex128), rcond=None)[0]
            path = ((lam[None, :] ** steps) * b) @ modes[context.readout].T
            tracks.append(path.real * scale + mean)
        return _weighted(np.stack(tracks), weights)


#: Memory experts: a strategy, with the analog's alignment in its name.
MEMORY_EXPERTS = (
    "analog",
    "analog_last",
    "analog_additive",
    "analog_multiplicative",
    "residual",
    "transfer",
)


def make_correction(
    strategy: str, alignment: Alignment = "zscore", blend: float = 1.0
) -> Correction:
    """The correction called ``strategy``; ``analog_<alignment>`` names an analog expert."""
    if strategy == "residual":
        return Residual()
    if strategy == "transfer":
        return Transfer()
    if strategy == "analog":
        return Analog(alignment=alignment, blend=blend)
    if strategy.startswith("analog_"):
        return Analog(alignment=strategy.removeprefix("analog_"), blend=blend)  # type: ignore[arg-type]
    raise ValueError(f"unknown memory strategy {strategy!r}; known: {list(MEMORY_EXPERTS)}")
