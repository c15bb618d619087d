"""`Settings`: the model parameters a pipeline runs on, and the layouts they allow.

The memory's key layout (dimension and quantisation bounds) follows from them, so
models that would share a memory are checked against it here (`check_layout`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import MAX_FEATURES, MemoryConfig, ModelConfig
from .memory import EpisodeMemory
from .rank import RankRule
from .recall import KeyWeights, key_bounds, key_dimension


@dataclass(frozen=True)
class Settings:
    """The model parameters the pipeline runs on."""

    delays: int
    window: int
    rank: RankRule
    episode_horizon: int
    level: float
    seed: int
    memory: MemoryConfig | None
    config: ModelConfig

    @property
    def state_delays(self) -> int:
        """Observations per channel in an episode's state."""
        given = self.memory.state_delays if self.memory is not None else None
        return given or self.delays

    def mode_length(self, n_channels: int) -> int:
        """Coordinates per mode in a signature: the newest ``mode_delays`` of each channel."""
        assert self.memory is not None
        return min(self.memory.mode_delays, self.delays) * n_channels

    def key_dimension(self, n_channels: int) -> int:
        """Length of the memory's keys for ``n_channels`` channels."""
        assert self.memory is not None
        # With a zero mode weight, modes stay in the episodes but out of the FAISS key.
        key_modes = self.mode_length(n_channels) if self.memory.mode_weight > 0 else 0
        return key_dimension(self.config.max_rank, key_modes, self.state_delays * n_channels)

    def key_bounds(self, n_channels: int) -> np.ndarray:
        """The range of each key coordinate, over which the memory quantises keys."""
        assert self.memory is not None
        mem = self.memory
        key_modes = self.mode_length(n_channels) if mem.mode_weight > 0 else 0
        weights = KeyWeights(mem.eigenvalue_weight, mem.mode_weight, mem.state_weight)
        return key_bounds(self.config.max_rank, key_modes, self.state_delays, n_channels, weights)

    def empty_memory(self, n_channels: int) -> EpisodeMemory:
        """An empty memory with the keys of ``n_channels`` channels under these settings."""
        assert self.memory is not None
        return EpisodeMemory(
            self.key_dimension(n_channels),
            capacity=self.memory.capacity,
            hnsw_threshold=self.memory.hnsw_threshold,
            key_bounds=self.key_bounds(n_channels),
        )


def check_layout(settings: Settings, n_channels: int, attached: EpisodeMemory | None) -> None:
    """Reject a channel count a model cannot hold (or its attached memory cannot store)."""
    n_features = settings.delays * n_channels + settings.config.n_lifted
    if n_features > MAX_FEATURES:
        raise ValueError(
            f"delays x channels (+ lifted features) = {n_features} exceeds {MAX_FEATURES}; "
            "use fewer delays or channels"
        )
    if attached is not None:
        dim = settings.key_dimension(n_channels)
        if attached.dim != dim:
            raise ValueError(
                f"attached memory has keys of length {attached.dim}, this "
                f"model needs {dim}: models sharing a memory need the same delays, "
                "channel count, max_rank, mode_weight and mode_delays"
            )
