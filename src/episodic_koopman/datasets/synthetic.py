"""Synthetic series: seeded generators of recurring regimes, drifts and a control.

No files: each generator is a pure function of its arguments and ``seed``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .series import Series


def _regime_sequence(
    rng: np.random.Generator, n: int, n_regimes: int, min_len: int, max_len: int
) -> np.ndarray:
    """Regime label per step: irregular order (no immediate repeats), irregular durations."""
    labels = np.empty(n, dtype=np.int64)
    k, current = 0, int(rng.integers(n_regimes))
    while k < n:
        length = int(rng.integers(min_len, max_len + 1))
        labels[k : k + length] = current
        k += length
        current = int(rng.choice([r for r in range(n_regimes) if r != current]))
    return labels


def _gaussian_smooth(values: np.ndarray, sigma: float, half_width: int) -> np.ndarray:
    """Gaussian-blurred copy of a 1-D series (edges padded with the end values)."""
    kernel = np.exp(-0.5 * (np.arange(-half_width, half_width + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    return np.convolve(np.pad(values, half_width, mode="edge"), kernel, mode="valid")


#: The three two-tone regimes of `recurring_oscillators` and `regime_panel`: each
#: regime's two periods (steps) and their amplitudes.
TWO_TONE_PERIODS = np.array([[11.0, 29.0], [17.0, 7.3], [23.0, 13.0]])
TWO_TONE_AMPLITUDES = np.array([[1.0, 0.6], [1.6, 0.4], [0.7, 1.1]])


def _noisy(
    generator: Callable[..., Series],
    values: np.ndarray,
    labels: np.ndarray,
    noise: float,
    rng: np.random.Generator,
) -> Series:
    """``values`` plus Gaussian noise, drawn last from ``rng`` (so a seed keeps its series),
    as a `Series` named and described after ``generator``."""
    values += noise * rng.standard_normal(values.size)
    return Series(generator.__name__, values, description=generator.__doc__ or "", regimes=labels)


def recurring_oscillators(n: int = 6000, seed: int = 0, noise: float = 0.05) -> Series:
    """Two-tone oscillations switching among three recurring regimes (phase-continuous)."""
    rng = np.random.default_rng(seed)
    periods, amplitudes = TWO_TONE_PERIODS, TWO_TONE_AMPLITUDES
    labels = _regime_sequence(rng, n, 3, 200, 500)
    phase = np.cumsum(2 * np.pi / periods[labels], axis=0)
    values = np.sum(amplitudes[labels] * np.sin(phase), axis=1)
    return _noisy(recurring_oscillators, values, labels, noise, rng)


def switching_rotations(n: int = 6000, seed: int = 1, noise: float = 0.03) -> Series:
    """4-D rotations whose frequencies move smoothly among recurring regimes; nonlinear readout."""
    rng = np.random.default_rng(seed)
    omegas = np.array([[0.21, 0.53], [0.37, 0.11], [0.62, 0.29]])
    labels = _regime_sequence(rng, n, 3, 250, 550)
    # Smooth transitions: the switching speeds blurred over ~30 steps around each switch.
    target = omegas[labels]
    smooth = np.column_stack([_gaussian_smooth(target[:, j], 10.0, 45) for j in range(2)])
    angle = np.cumsum(smooth, axis=0)
    x1, x2 = np.cos(angle[:, 0]), np.sin(angle[:, 0])
    x3, x4 = np.cos(angle[:, 1]), np.sin(angle[:, 1])
    values = np.tanh(1.5 * x1) + 0.5 * x3 + 0.3 * x2 * x4
    return _noisy(switching_rotations, values, labels, noise, rng)


def drifting_van_der_pol(n: int = 6000, seed: int = 2, noise: float = 0.02) -> Series:
    """Van der Pol oscillator whose ``mu`` drifts among recurring levels and returns."""
    rng = np.random.default_rng(seed)
    levels = np.array([0.3, 1.5, 3.0])
    labels = _regime_sequence(rng, n, 3, 300, 600)
    mu = _gaussian_smooth(levels[labels].astype(float), 15.0, 60)
    h, substeps = 0.05, 4  # sample every 0.2 time units
    state = np.array([2.0, 0.0])

    def field(s: np.ndarray, m: float) -> np.ndarray:
        return np.array([s[1], m * (1 - s[0] ** 2) * s[1] - s[0]])

    values = np.empty(n)
    for k in range(n):
        for _ in range(substeps):
            k1 = field(state, mu[k])
            k2 = field(state + 0.5 * h * k1, mu[k])
            k3 = field(state + 0.5 * h * k2, mu[k])
            k4 = field(state + h * k3, mu[k])
            state = state + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        values[k] = state[0]
    return _noisy(drifting_van_der_pol, values, labels, noise, rng)


def stationary_control(n: int = 6000, seed: int = 3) -> Series:
    """Stationary control: two fixed sinusoids plus AR(1) noise (memory must not hurt)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    ar = np.empty(n)
    ar[0] = 0.0
    shocks = 0.1 * rng.standard_normal(n)
    for k in range(1, n):
        ar[k] = 0.7 * ar[k - 1] + shocks[k]
    values = np.sin(2 * np.pi * t / 24) + 0.5 * np.sin(2 * np.pi * t / 9.5 + 1.0) + ar
    return Series("stationary_control", values, description=stationary_control.__doc__ or "")


def regime_panel(
    n_series: int = 8, n: int = 2000, seed: int = 4, noise: float = 0.05
) -> list[Series]:
    """Series sharing three regimes, each at its own scale, level, phase and regime order."""
    rng = np.random.default_rng(seed)
    periods, amplitudes = TWO_TONE_PERIODS, TWO_TONE_AMPLITUDES
    panel = []
    for i in range(n_series):
        labels = _regime_sequence(rng, n, 3, 200, 500)
        phase = np.cumsum(2 * np.pi / periods[labels], axis=0) + rng.uniform(0, 2 * np.pi, 2)
        unit = np.sum(amplitudes[labels] * np.sin(phase), axis=1) + noise * rng.standard_normal(n)
        scale, level = 10 ** rng.uniform(-1, 3), rng.uniform(-5, 5) * 10 ** rng.uniform(0, 2)
        panel.append(Series(f"panel_{i}", level + scale * unit, regimes=labels))
    return panel


SYNTHETIC: dict[str, Callable[..., Series]] = {
    "recurring_oscillators": recurring_oscillators,
    "switching_rotations": switching_rotations,
    "drifting_van_der_pol": drifting_van_der_pol,
    "stationary_control": stationary_control,
}
