"""The recall component: the present's identity in memory, and the episodes it recalls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .components import State, prefixed, unprefixed
from .drift_gate import DriftGate
from .embedding import DelayEmbedding, History
from .episode_refs import EpisodeRefs, complete_copies
from .koopman_fit import KoopmanFit
from .memory import EpisodeMemory
from .recall import KeyWeights, attention_weights, episode_key, normalized_state
from .recall_threshold import AdaptiveThreshold
from .rerank import nearest_exact
from .spectrum import Signature, make_signature


@dataclass(frozen=True)
class Query:
    """The present as memory sees it: spectral signature, normalised state and FAISS key."""

    signature: Signature
    state: np.ndarray
    key: np.ndarray


@dataclass(frozen=True)
class Recall:
    """The episodes recalled for one query (best first) and whether they may correct."""

    ids: np.ndarray
    distances: np.ndarray
    weights: np.ndarray
    records: dict[str, np.ndarray]
    admitted: bool


class Recaller:
    """Owns the episode memory, the adaptive recall threshold and the drift gate.

    A query is reranked from ``candidates`` FAISS neighbours to the ``top_k``
    nearest by exact distance, weighted by attention at temperature ``tau``, and
    admitted when the threshold and the gate allow.
    """

    def __init__(
        self,
        memory: EpisodeMemory,
        refs: EpisodeRefs,
        key_weights: KeyWeights,
        max_rank: int,
        mode_length: int,
        state_delays: int,
        candidates: int,
        top_k: int,
        tau: float,
        recall_quantile: float,
        gate: DriftGate | None,
    ) -> None:
        self.memory = memory
        self.refs = refs
        self.key_weights = key_weights
        self.max_rank = max_rank
        self.mode_length = mode_length
        self.state_delays = state_delays
        self.candidates = candidates
        self.top_k = top_k
        self.tau = tau
        self.threshold = AdaptiveThreshold(recall_quantile)
        self.gate = gate

    def query(
        self, fit: KoopmanFit, psi: np.ndarray, embedding: DelayEmbedding, history: History
    ) -> Query:
        """The query of the present: ``fit`` seen from snapshot ``psi``, and the newest state."""
        n_inputs = embedding.dimension
        # At a zero mode weight, mode shapes are in neither keys nor distances: skip them.
        uses_modes = self.key_weights.modes > 0
        modes = fit.modes[:n_inputs] if uses_modes else np.zeros((0, fit.rank), np.complex128)
        signature = make_signature(
            fit.eigenvalues,
            fit.amplitudes_at(psi),
            modes,
            mode_rows=slice(n_inputs - self.mode_length, n_inputs) if uses_modes else slice(0, 0),
            reference_rows=slice(self.mode_length - embedding.n_channels, None),
            r_max=self.max_rank,
        )
        state = normalized_state(history.last(self.state_delays))
        return Query(signature, state, episode_key(signature, state, self.key_weights))

    def recall(self, query: Query, now: int, observe: bool) -> Recall | None:
        """Episodes nearest to ``query`` at observation index ``now`` (``None`` if memory is empty).

        ``observe`` (scored steps only) feeds the best distance to the threshold first.
        """
        if len(self.memory) == 0:
            return None
        ids, _ = self.memory.search(query.key, self.candidates)
        if ids.size == 0:
            return None
        stored = self.memory.get(ids)
        # The rerank reads the signatures and states of every candidate; the windows
        # and continuations are read for the episodes kept only.
        copies = self.memory.holds_copies
        records = complete_copies(stored) if copies else self.refs.match_parts(stored)
        order, ranked = nearest_exact(
            query.signature, query.state, ids, records, self.key_weights, self.top_k
        )
        if copies:
            kept = {name: column[order] for name, column in records.items()}
        else:
            kept = self.refs.expand_kept(stored, records, order)
        best = float(ranked[0])
        if observe:
            self.threshold.observe(best)
        gate_open = self.gate is None or self.gate.is_open(now)
        admitted = gate_open and self.threshold.admits(best)
        weights = attention_weights(ranked, self.tau, self.threshold.scale())
        return Recall(
            ids=ids[order],
            distances=ranked,
            weights=weights,
            records=kept,
            admitted=admitted,
        )

    def records(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        """The full records of episodes ``ids`` (from references, or the memory's copies)."""
        records = self.memory.get(ids)
        if self.memory.holds_copies:
            return complete_copies(records)
        return self.refs.expand(records)

    def browse(self, offset: int, limit: int, dt: float) -> list[dict[str, Any]]:
        """JSON-safe summaries of stored episodes, oldest first."""
        ids = self.memory.live_ids()[offset : offset + limit]
        if ids.size == 0:
            return []
        records = self.records(ids)
        kept = "forecast" in records  # only where an expert uses it (``residual``)
        out = []
        for i, episode_id in enumerate(ids):
            rank = int(records["rank"][i])
            eigs = records["eigenvalues"][i][:rank]
            realised = records["continuation"][i]
            with np.errstate(divide="ignore"):
                growth = np.log(np.abs(eigs)) / dt
            out.append(
                {
                    "id": int(episode_id),
                    "source": int(records["source"][i]),
                    "origin": int(records["origin"][i]),
                    "window_start": int(records["window_start"][i]),
                    "rank": rank,
                    "frequencies": (np.angle(eigs) / (2 * np.pi * dt)).tolist(),
                    "growth_rates": [float(g) if np.isfinite(g) else None for g in growth],
                    "forecast": records["forecast"][i].tolist() if kept else None,
                    "realised": realised.tolist(),
                    "mae": (
                        float(np.mean(np.abs(realised - records["forecast"][i]))) if kept else None
                    ),
                }
            )
        return out

    def keys_of(self, ids: np.ndarray) -> np.ndarray:
        """The keys of live episodes ``ids`` of the own memory, made again from references.

        The same functions of the same values as when they were made: bit-identical.
        """
        return self.refs.keys(self.memory.get(ids), self.key_weights)

    def get_state(self) -> State:
        # The own memory's flat index is made again from the references at load.
        memory_meta, memory_arrays = self.memory.get_state(with_index=self.memory.holds_copies)
        refs_meta, refs_arrays = self.refs.get_state()
        arrays = {"threshold": self.threshold.get_state()} | prefixed("memory", memory_arrays)
        arrays |= prefixed("refs", refs_arrays)
        if self.gate is not None:
            arrays |= prefixed("gate", self.gate.get_state())
        return {"memory": memory_meta, "refs": refs_meta}, arrays

    def set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.threshold.set_state(arrays["threshold"])
        if self.gate is not None:
            self.gate.set_state(unprefixed("gate", arrays))
        # The history (observables) is restored before; the references, then the memory.
        self.refs.set_state(meta["refs"], unprefixed("refs", arrays))
        self.memory.set_state(meta["memory"], unprefixed("memory", arrays), self.keys_of)
