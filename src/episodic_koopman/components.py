"""The protocol every stateful part of a model follows, so persistence needs no internals.

A component owns its state and describes it as JSON metadata plus named arrays;
`episodic_koopman.persistence` saves each component's pair under the component's
name and hands it back on load.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

State = tuple[dict[str, Any], dict[str, np.ndarray]]


class Component(Protocol):
    """A part of a model that saves and restores its own state exactly."""

    def get_state(self) -> State: ...

    def set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None: ...


class ArrayState(Protocol):
    """A part whose whole state is arrays (`ConformalCalibrator`, `ExpertMixture`...)."""

    def get_state(self) -> dict[str, np.ndarray]: ...

    def set_state(self, state: dict[str, np.ndarray]) -> None: ...


class ArraysOnly:
    """Adapts an `ArrayState` part to the `Component` protocol (with empty metadata)."""

    def __init__(self, part: ArrayState) -> None:
        self.part = part

    def get_state(self) -> State:
        return {}, self.part.get_state()

    def set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.part.set_state(arrays)


def prefixed(prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``arrays`` with every name under ``prefix.``."""
    return {f"{prefix}.{k}": np.asarray(v) for k, v in arrays.items()}


def unprefixed(prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays under ``prefix.``, with the prefix removed."""
    start = len(prefix) + 1
    return {k[start:]: v for k, v in arrays.items() if k.startswith(prefix + ".")}
