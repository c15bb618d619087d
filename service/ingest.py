"""Parsing pushed observations (JSON or NDJSON) into validated, typed batches.

Everything that can be checked without the series' state is checked here, on
the event loop, before the batch goes to the committer: shapes, numbers (finite,
not strings, within ``max_abs_value``), timestamps, channel names, and that one
request uses one kind of time and one kind of ``y``. Errors are 422s naming the
field as ``["body", "observations", i, "t" | "y", ...]`` (for NDJSON, ``i``
counts non-blank lines).
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError, invalid
from .timestamps import Stamp, parse_t

NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")
MAX_CHANNEL_NAME = 128


@dataclass
class ParsedBatch:
    """Observations in request order: their timestamps and values (floats or channel dicts)."""

    stamps: list[Stamp] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.stamps)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as columns (a push crosses to its shard process): a Stamp object per
        # observation pickles at several microseconds each, more than parsing it did.
        stamps = self.stamps
        kinds = [s.kind for s in stamps]
        kind = kinds[0] if kinds and kinds.count(kinds[0]) == len(kinds) else kinds
        columns = (kind, [s.key for s in stamps], [s.tz for s in stamps], self.values)
        return (_from_columns, columns)


def _from_columns(
    kind: str | list[str], keys: list[Any], tzs: list[int | None], values: list[Any]
) -> ParsedBatch:
    kinds = kind if isinstance(kind, list) else [kind] * len(keys)
    stamps = [Stamp(k, key, tz) for k, key, tz in zip(kinds, keys, tzs, strict=True)]
    return ParsedBatch(stamps, values)


class BatchParser:
    """Validates observations one at a time (so NDJSON can stream) under the request limits."""

    def __init__(self, max_observations: int, max_abs_value: float, max_channels: int) -> None:
        self.max_observations = max_observations
        self.max_abs_value = max_abs_value
        self.max_channels = max_channels
        self.batch = ParsedBatch()

    def add(self, item: Any) -> None:
        i = len(self.batch.stamps)
        if i >= self.max_observations:
            raise ApiError(
                413,
                f"more than {self.max_observations} observations in one request "
                "(EPISODIC_KOOPMAN_MAX_OBSERVATIONS_PER_REQUEST)",
            )
        if type(item) is not dict or len(item) != 2 or "t" not in item or "y" not in item:
            self._reject_shape(item, i)
        try:
            stamp = parse_t(item["t"])
        except ValueError as exc:
            raise invalid(["body", "observations", i, "t"], str(exc)) from None
        y = item["y"]
        value = self._number(y, i) if type(y) is not dict else self._channels(y, i)
        if i:
            first = self.batch.stamps[0].kind
            if stamp.kind != first:
                raise invalid(
                    ["body", "observations", i, "t"], f"t must be of one kind per request ({first})"
                )
            if type(value) is not type(self.batch.values[0]):
                raise invalid(
                    ["body", "observations", i, "y"],
                    "y must be a number in every observation, or a dict in every one",
                )
        self.batch.stamps.append(stamp)
        self.batch.values.append(value)

    @staticmethod
    def _reject_shape(item: Any, i: int) -> None:
        where = ["body", "observations", i]
        if not isinstance(item, dict):
            raise invalid(where, "an observation must be an object {t, y}", "model_type")
        for name in item:
            if name not in ("t", "y"):
                raise invalid([*where, name], "unknown field (expected only t and y)", "extra")
        for name in ("t", "y"):
            if name not in item:
                raise invalid([*where, name], "field required", "missing")

    def _number(self, value: Any, i: int, channel: str | None = None) -> float:
        limit = self.max_abs_value
        if type(value) is float and -limit <= value <= limit:
            return value  # the common case in one test (NaN fails the comparison)
        loc: list[Any] = ["body", "observations", i, "y"]
        if channel is not None:
            loc.append(channel)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise invalid(loc, f"must be a number, got {type(value).__name__}", "float_type")
        if isinstance(value, float) and not math.isfinite(value):
            raise invalid(loc, "must be a finite number (no NaN or infinity)", "finite_number")
        if abs(value) > limit:
            raise invalid(
                loc,
                f"|value| exceeds {limit:g} (EPISODIC_KOOPMAN_MAX_ABS_VALUE)",
                "less_than_equal",
            )
        return float(value)

    def _channels(self, y: dict[str, Any], i: int) -> dict[str, float]:
        loc = ["body", "observations", i, "y"]
        if not y:
            raise invalid(loc, "a dict of channels must not be empty")
        if len(y) > self.max_channels:
            raise invalid(loc, f"more than {self.max_channels} channels")
        out = {}
        for name, value in y.items():
            if len(name) > MAX_CHANNEL_NAME:
                raise invalid(loc, f"channel names are at most {MAX_CHANNEL_NAME} characters")
            out[name] = self._number(value, i, name)
        return out


def _load_json(raw: bytes | str, loc: list[Any]) -> Any:
    try:
        # NaN and Infinity parse as floats here and are rejected by the number check.
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise invalid(loc, f"invalid JSON: {str(exc)[:200]}", "json_invalid") from None


def parse_json_body(raw: bytes, parser: BatchParser) -> ParsedBatch:
    body = _load_json(raw, ["body"])
    if not isinstance(body, dict):
        raise invalid(["body"], "the body must be an object {observations: [...]}", "model_type")
    for name in body:
        if name != "observations":
            raise invalid(["body", name], "unknown field (expected only observations)", "extra")
    items = body.get("observations")
    if not isinstance(items, list):
        raise invalid(["body", "observations"], "observations must be a list", "list_type")
    if len(items) > parser.max_observations:
        raise ApiError(
            413,
            f"{len(items)} observations in one request; the limit is {parser.max_observations} "
            "(EPISODIC_KOOPMAN_MAX_OBSERVATIONS_PER_REQUEST)",
        )
    for item in items:
        parser.add(item)
    return parser.batch


async def parse_ndjson_stream(chunks: AsyncIterator[bytes], parser: BatchParser) -> ParsedBatch:
    """One observation per line, parsed as the body streams in (blank lines are skipped)."""
    tail = b""
    async for chunk in chunks:
        lines = (tail + chunk).split(b"\n")
        tail = lines.pop()
        for line in lines:
            if line.strip():
                parser.add(_load_json(line, ["body", "observations", len(parser.batch)]))
    if tail.strip():
        parser.add(_load_json(tail, ["body", "observations", len(parser.batch)]))
    return parser.batch
