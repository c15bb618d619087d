"""The flat form of `EpisodicKoopman`'s parameters: every knob at the top level.

The service's ``params`` and the CLI's ``--param k=v`` name parameters this way
(`EpisodicKoopman.from_flat`, `to_flat`); here is how flat names map onto the
constructor's own parameters and the fields of `MemoryConfig` and `ModelConfig`.
``memory`` is a bool in the flat form; `MemoryConfig.stride` is ``memory_stride``.

>>> split_flat({"delays": 8, "memory_stride": 2})["memory"].stride
2
>>> sorted(set(FLAT_NAMES) - set(MEMORY_NAMES) - set(MODEL_NAMES))  # not in a config
['delays', 'dt', 'episode_horizon', 'level', 'memory', 'missing', 'rank', 'seed', 'window']
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .config import MemoryConfig, ModelConfig

#: Flat names of the constructor's own parameters.
CONSTRUCTOR_NAMES = (
    "delays",
    "window",
    "rank",
    "episode_horizon",
    "level",
    "missing",
    "seed",
    "dt",
)
#: Flat name -> `MemoryConfig` field.
MEMORY_NAMES = {f.name: f.name for f in dataclasses.fields(MemoryConfig)} | {
    "memory_stride": "stride"
}
del MEMORY_NAMES["stride"]
#: Flat name -> `ModelConfig` field.
MODEL_NAMES = {f.name: f.name for f in dataclasses.fields(ModelConfig)}
#: Every flat name, in a stable order (the constructor's parameters before version 0.2).
FLAT_NAMES = (
    "delays",
    "window",
    "rank",
    "max_rank",
    "memory",
    "strategy",
    "experts",
    "episode_horizon",
    "memory_stride",
    "stride",
    "stride_doublings",
    "stride_doubling_at",
    "top_k",
    "candidates",
    "tau",
    "recall_quantile",
    "alignment",
    "blend",
    "mixture_rule",
    "mixture_decay",
    "mixture_eta",
    "mixture_fast_decay",
    "eigenvalue_weight",
    "mode_weight",
    "state_weight",
    "capacity",
    "hnsw_threshold",
    "drift_gate",
    "gate_span",
    "level",
    "calibration_window",
    "early_grading",
    "detrend",
    "trend_gate",
    "classical_experts",
    "envelope",
    "stabilize",
    "refit_every",
    "lifting",
    "n_components",
    "bandwidth",
    "mode_delays",
    "state_delays",
    "missing",
    "seed",
    "dt",
)
assert set(FLAT_NAMES) == {*CONSTRUCTOR_NAMES, "memory", *MEMORY_NAMES, *MODEL_NAMES}


#: Parameters added after models were first stored, with the value every model stored
#: before them ran (a fixed scoring stride, before it grew with the series; no grading
#: between scored ticks before the first fit; no detrending, gated or not). Stored parameters
#: always name the classical experts; should a record lack them, it ran the bank from before
#: the Theta expert.
RAN_BEFORE: dict[str, Any] = {
    "stride_doublings": 0,
    "early_grading": False,
    "detrend": False,
    "trend_gate": None,
    "classical_experts": "last,seasonal,damped,ar,seasonal_ar",
}


def stored_params(params: dict[str, Any]) -> dict[str, Any]:
    """Stored flat parameters (a model file's, a service record's) completed with what the
    model they describe ran: a name missing from them keeps its old value, not today's
    default, so the model carries on as it ran."""
    return {**RAN_BEFORE, **params} if isinstance(params, dict) else params


def split_flat(params: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments from flat parameters; unknown names are rejected by name.

    ``memory`` is a bool in the flat form (default true); memory knobs given with
    ``memory=False`` are validated and then unused.
    """
    if not isinstance(params, dict):
        raise TypeError(f"flat parameters must be a dict, got {type(params).__name__}")
    unknown = sorted(set(params) - set(FLAT_NAMES))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown}; valid parameters: {', '.join(FLAT_NAMES)}"
        )
    enabled = params.get("memory", True)
    if not isinstance(enabled, bool):
        raise TypeError(f"memory must be true or false in flat parameters, got {enabled!r}")
    memory = MemoryConfig(**{field: params[k] for k, field in MEMORY_NAMES.items() if k in params})
    config = ModelConfig(**{field: params[k] for k, field in MODEL_NAMES.items() if k in params})
    own = {k: params[k] for k in CONSTRUCTOR_NAMES if k in params}
    return own | {"memory": memory if enabled else None, "config": config}


def join_flat(
    own: dict[str, Any], memory: MemoryConfig | None, config: ModelConfig
) -> dict[str, Any]:
    """Flat parameters (every name in `FLAT_NAMES`) from the constructor's arguments."""
    shown = memory if memory is not None else MemoryConfig()
    values = own | {"memory": memory is not None}
    values |= {k: getattr(shown, field) for k, field in MEMORY_NAMES.items()}
    values |= {k: getattr(config, field) for k, field in MODEL_NAMES.items()}
    return {k: values[k] for k in FLAT_NAMES}
