"""A series' model parameters as stored: complete, canonical, and able to hold its channels.

The committer stores every constructor parameter of a new or reconfigured series
(`full_params`), compares stored ones as this library writes them
(`canonical_params`), and refuses a channel count the model cannot hold before
anything is stored (`check_layout`).
"""

from __future__ import annotations

import json
from typing import Any

from episodic_koopman import EpisodicKoopman
from episodic_koopman.auto_embedding import final_delays
from episodic_koopman.flat_params import stored_params
from episodic_koopman.forecaster import MAX_FEATURES

from ..errors import invalid


def full_params(given: dict[str, Any]) -> dict[str, Any]:
    """Every constructor parameter with defaults filled in (the library validates them).

    Storing all of them freezes a series' configuration: a later change of the
    library's defaults cannot make replay diverge from what was acknowledged.
    """
    try:
        model = EpisodicKoopman.from_flat(given)
    except (TypeError, ValueError) as exc:
        message = str(exc)
        name = next(
            (p for p in sorted(given, key=len, reverse=True) if message.startswith(p)), None
        )
        loc = ["body", "params", name] if name else ["body", "params"]
        raise invalid(loc, message) from None
    return json.loads(json.dumps(model.to_flat()))


def canonical_params(params: dict[str, Any]) -> dict[str, Any]:
    """Stored flat parameters as this library writes them (old names and aliases mapped).

    A series stored by an older version may say ``missing="raise"``, or lack a parameter
    added since (`stored_params` gives it the value its model ran with); the model it
    describes is the same one.
    """
    return json.loads(json.dumps(EpisodicKoopman.from_flat(stored_params(params)).to_flat()))


def check_layout(params: dict[str, Any], first: float | dict[str, float]) -> None:
    """Reject a channel count the model cannot hold (before anything is stored)."""
    n_channels = len(first) if isinstance(first, dict) else 1
    # No delays: an automatic embedding, which must hold its last (largest) stage.
    delays = params["delays"] if params["delays"] is not None else final_delays()
    n_features = delays * n_channels
    if params["lifting"] == "rff":
        n_features += params["n_components"]
    if n_features > MAX_FEATURES:
        raise invalid(
            ["body", "observations", 0, "y"],
            f"delays x channels (+ lifted features) = {n_features} exceeds {MAX_FEATURES}",
        )
