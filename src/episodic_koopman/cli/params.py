"""``--param KEY=VALUE``: model parameters on the command line (one parser for every command)."""

from __future__ import annotations

import json
from typing import Any


def parse_params(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values are JSON when they parse as JSON, text otherwise.

    A later pair overrides an earlier one with the same key. Raises `ValueError`
    on an item without ``=`` or with an empty key.

    >>> parse_params(["delays=16", "rank=gd", "drift_gate=null", "tau=0.5"])
    {'delays': 16, 'rank': 'gd', 'drift_gate': None, 'tau': 0.5}
    >>> parse_params(["delays"])
    Traceback (most recent call last):
    ...
    ValueError: --param takes KEY=VALUE, got 'delays'
    """
    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--param takes KEY=VALUE, got {item!r}")
        try:
            params[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[key.strip()] = value
    return params
