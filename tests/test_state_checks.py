"""A saved state that does not fit its component raises before anything changes.

Compiled kernels index the components' arrays without bounds checks, so each
``set_state``/``restore`` checks shapes, dtypes and counts first: a bad state must
raise a `ValueError` naming the field and leave the component exactly as it was
(a wrong shape used to read and write past the end of buffers and abort the process).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import pytest

from episodic_koopman.embedding import History
from episodic_koopman.experts import THETA_ALPHAS, THETA_OPT_WEIGHTS
from episodic_koopman.forecaster import EpisodicKoopman
from episodic_koopman.intervals import ConformalCalibrator
from episodic_koopman.persistence import CapturedModel, capture, model_from_bytes
from episodic_koopman.sorted_ring import SortedRing
from episodic_koopman.theta import Theta


@pytest.fixture(scope="module")
def model() -> EpisodicKoopman:
    """A model past its first episodes, with pending scores and records."""
    t = np.arange(400)
    m = EpisodicKoopman(delays=8, window=48, episode_horizon=8)
    m.learn_many(10.0 + np.sin(2 * np.pi * t / 12) + 0.01 * t)
    return m


def _copy_state(state: Any) -> Any:
    return copy.deepcopy(state)


def _same(a: Any, b: Any) -> bool:
    """Equal nested states: the same keys, values, array dtypes, shapes and bits."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bytes | bytearray):
        return bytes(a) == bytes(b)
    return bool(a == b)


def _rejects(component: Any, meta: dict[str, Any], arrays: dict[str, np.ndarray], field: str):
    """``set_state`` raises a ValueError naming ``field`` and changes nothing."""
    before = _copy_state(component.get_state())
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        component.set_state(meta, arrays)
    assert _same(component.get_state(), before)


def _cut(array: np.ndarray, axis: int = 0) -> np.ndarray:
    """``array`` without its last entry along ``axis``."""
    return np.take(array, np.arange(array.shape[axis] - 1), axis=axis)


# -- Theta ---------------------------------------------------------------------------
THETA_FIELDS = ("sums", "level", "lag", "loss", "season", "scale")


@pytest.mark.parametrize("field", THETA_FIELDS)
def test_theta_rejects_a_truncated_array(model: EpisodicKoopman, field: str) -> None:
    theta = model.components()["expert_theta_seasonal"]
    meta, arrays = _copy_state(theta.get_state())
    _rejects(theta, meta, arrays | {field: _cut(arrays[field])}, field)


def test_theta_rejects_a_state_of_another_candidate_grid() -> None:
    """The reviewer's case: a one-candidate state into the 15-candidate grid."""
    small = Theta("theta", block=4, alphas=(0.5,), weights=(1.0,))
    big = Theta("theta", block=4, alphas=THETA_ALPHAS, weights=THETA_OPT_WEIGHTS)
    for theta in (small, big):
        h = History(length=64, n_channels=1)
        for t in range(16):
            h.append(np.array([3.0 + 2.0 * t]))
            if (t + 1) % 4 == 0:
                theta.advance(h, t + 1)
    meta, arrays = small.get_state()
    _rejects(big, meta, arrays, "level")


@pytest.mark.parametrize(
    ("change", "field"),
    [({"seen": -1}, "seen"), ({"period": 5}, "season"), ({"period": 0}, "period")],
)
def test_theta_rejects_a_corrupt_count(
    model: EpisodicKoopman, change: dict[str, int], field: str
) -> None:
    theta = model.components()["expert_theta_seasonal"]
    meta, arrays = _copy_state(theta.get_state())
    _rejects(theta, meta | change, arrays, field)


def test_theta_rejects_an_integer_count_given_as_float(model: EpisodicKoopman) -> None:
    theta = model.components()["expert_theta_seasonal"]
    meta, arrays = _copy_state(theta.get_state())
    _rejects(theta, meta | {"seen": 400.5}, arrays, "seen")


# -- SortedRing ----------------------------------------------------------------------
def _ring() -> SortedRing:
    ring = SortedRing(window=4, cells=3)
    for i in range(6):
        ring.push(np.array([i, -i, 2.0 * i]))
    ring.sorted()
    return ring


@pytest.mark.parametrize(
    ("values", "count", "field"),
    [
        (np.zeros((3, 3)), 6, "values"),
        (np.zeros((4, 2)), 6, "values"),
        (np.zeros(12), 6, "values"),
        (np.zeros((4, 3), dtype=np.complex128), 6, "values"),
        (np.zeros((4, 3)), -1, "count"),
        (np.zeros((4, 3)), 2.0, "count"),
    ],
)
def test_sorted_ring_restore_rejects_a_bad_state(
    values: np.ndarray, count: Any, field: str
) -> None:
    ring = _ring()
    before = (ring.values.copy(), ring.count, ring.sorted().copy())
    with pytest.raises(ValueError, match=field):
        ring.restore(values, count)
    assert ring.values.tobytes() == before[0].tobytes() and ring.count == before[1]
    assert ring.sorted().tobytes() == before[2].tobytes()


def test_sorted_ring_restore_takes_a_good_state() -> None:
    ring, other = _ring(), SortedRing(window=4, cells=3)
    other.restore(ring.values, ring.count)
    assert other.sorted().tobytes() == ring.sorted().tobytes()


# -- ConformalCalibrator ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("scores", lambda a: _cut(a["scores"])),
        ("scores", lambda a: _cut(a["scores"], 1)),
        ("p_values", lambda a: _cut(a["p_values"])),
        ("spread_mean", lambda a: _cut(a["spread_mean"])),
        ("hits", lambda a: a["hits"][None]),
        ("counts", lambda a: a["counts"][:2]),
        ("counts", lambda a: a["counts"].astype(np.float64)),
        ("counts[0]", lambda a: np.array([-1, 0, 0])),
        ("counts[2]", lambda a: np.array([0, 0, -5])),
        ("early_scores", lambda a: np.zeros((5, 8, 1))),
        ("early_count", lambda a: np.array([-1])),
        ("early_count", lambda a: np.array([3])),  # with no early scores
    ],
)
def test_calibrator_rejects_a_bad_state(model: EpisodicKoopman, field: str, bad: Any) -> None:
    intervals = model.components()["intervals"]
    assert isinstance(intervals.part, ConformalCalibrator)
    meta, arrays = _copy_state(intervals.get_state())
    key = field.split("[")[0]
    _rejects(intervals, meta, arrays | {key: bad(arrays)}, field)


def test_calibrator_rejects_a_missing_field(model: EpisodicKoopman) -> None:
    intervals = model.components()["intervals"]
    meta, arrays = _copy_state(intervals.get_state())
    del arrays["hits"]
    _rejects(intervals, meta, arrays, "hits")


# -- ExpertMixture -------------------------------------------------------------------
@pytest.mark.parametrize("field", ["loss", "mass", "fast", "regret", "boa"])
def test_mixture_rejects_a_truncated_array(model: EpisodicKoopman, field: str) -> None:
    combiner = model.components()["combiner"]
    mixture = combiner.mixture
    state = _copy_state(mixture.get_state())
    before = _copy_state(mixture.get_state())
    for axis in (0, 1):
        with pytest.raises(ValueError, match=field):
            mixture.set_state(state | {field: _cut(state[field], axis)})
        assert _same(mixture.get_state(), before)


@pytest.mark.parametrize("step", [-1, 8, 1000])
def test_mixture_update_rejects_a_step_out_of_range(model: EpisodicKoopman, step: int) -> None:
    mixture = model.components()["combiner"].mixture
    n = len(mixture.names)
    before = _copy_state(mixture.get_state())
    with pytest.raises(ValueError, match="steps"):
        mixture.update(step, np.ones(n), np.ones(n, dtype=bool))
    assert _same(mixture.get_state(), before)


def test_mixture_update_rejects_losses_of_another_shape(model: EpisodicKoopman) -> None:
    mixture = model.components()["combiner"].mixture
    n = len(mixture.names)
    before = _copy_state(mixture.get_state())
    with pytest.raises(ValueError, match="losses"):
        mixture.update(0, np.ones(n + 1), np.ones(n, dtype=bool))
    with pytest.raises(ValueError, match="available"):
        mixture.update(0, np.ones(n), np.ones(n - 1, dtype=bool))
    with pytest.raises(ValueError, match="steps"):
        mixture.update_many(np.array([0.0]), np.ones((1, n)), np.ones((1, n), dtype=bool))
    assert _same(mixture.get_state(), before)


# -- ForecastScorer ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("tracks", lambda a: _cut(a["tracks"], 2)),
        ("available", lambda a: _cut(a["available"], 1)),
        ("available", lambda a: a["available"].astype(np.float64)),
        ("issued", lambda a: _cut(a["issued"], 1)),
        ("realised", lambda a: _cut(a["realised"], 2)),
        ("ref_scale", lambda a: a["ref_scale"][:, :0]),
        ("counts", lambda a: a["counts"][:, :1]),
        ("n_realised", lambda a: a["counts"] + np.array([0, 100])),
        ("origin", lambda a: a["counts"] - np.array([10_000, 0])),
    ],
)
def test_scorer_rejects_a_bad_state(model: EpisodicKoopman, field: str, bad: Any) -> None:
    scorer = model.components()["scorer"]
    meta, arrays = _copy_state(scorer.get_state())
    assert meta["n_pending"] >= 1
    key = "counts" if field in ("n_realised", "origin") else field
    _rejects(scorer, meta, arrays | {key: bad(arrays)}, field)


def test_scorer_rejects_more_pending_than_saved(model: EpisodicKoopman) -> None:
    scorer = model.components()["scorer"]
    meta, arrays = _copy_state(scorer.get_state())
    _rejects(scorer, meta | {"n_pending": meta["n_pending"] + 1}, arrays, "tracks")
    _rejects(scorer, meta | {"n_pending": -1}, arrays, "n_pending")


# -- EpisodeRecorder -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("pending.keys", lambda a: _cut(a["pending.keys"], 1)),
        ("pending.fits", lambda a: _cut(a["pending.fits"])),
        ("pending.window_starts", lambda a: a["pending.window_starts"].astype(np.float64)),
        ("pending.forecasts", lambda a: np.zeros((len(a["pending.origins"]), 3, 1))),
        ("last_signature.modes", lambda a: _cut(a["last_signature.modes"])),
        ("last_signature.rank", lambda a: np.array(1000)),
        ("last_signature.rank", lambda a: np.array(-1)),
    ],
)
def test_recorder_rejects_a_bad_state(model: EpisodicKoopman, field: str, bad: Any) -> None:
    recorder = model.components()["recorder"]
    meta, arrays = _copy_state(recorder.get_state())
    assert meta["has_pending"] and meta["has_last_signature"]
    _rejects(recorder, meta, arrays | {field: bad(arrays)}, field)


def test_recorder_rejects_a_negative_cursor(model: EpisodicKoopman) -> None:
    recorder = model.components()["recorder"]
    meta, arrays = _copy_state(recorder.get_state())
    _rejects(recorder, meta | {"cursor": -3}, arrays, "cursor")


# -- EpisodeMemory and its KeyIndex --------------------------------------------------
class _MemoryState:
    """`EpisodeMemory` with its index, under the (meta, arrays) protocol of `_rejects`."""

    def __init__(self, memory: Any) -> None:
        self.memory = memory

    def get_state(self) -> Any:
        meta, arrays = self.memory.get_state(with_index=True)
        arrays = dict(arrays)
        arrays["faiss_index"] = np.asarray(arrays["faiss_index"]).copy()
        keys = self.memory.keys(self.memory.live_ids())
        return meta, arrays, keys, self.memory._keys.hnsw

    def set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.memory.set_state(meta, arrays)


def _tail_from(indexed_to: int, arrays: dict[str, np.ndarray]) -> np.ndarray:
    codes = arrays["tail_codes"]
    return np.zeros((codes.shape[0] + 352 - indexed_to, codes.shape[1]), dtype=codes.dtype)


def _memory_cases() -> list[tuple[str, Any, Any]]:
    return [
        ("tail_codes", {}, lambda a: {"tail_codes": _cut(a["tail_codes"])}),
        ("tail_codes", {}, lambda a: {"tail_codes": a["tail_codes"][:, :-1]}),
        ("tail_codes", {}, lambda a: {"tail_codes": a["tail_codes"].astype(np.float64)}),
        ("col.origin", {}, lambda a: {"col.origin": _cut(a["col.origin"])}),
        ("indexed_to", {"indexed_to": 10_000}, lambda a: {}),
        ("indexed_from", {"indexed_from": 10_000}, lambda a: {}),
        ("indexed_from", {"indexed_from": 5}, lambda a: {}),  # past the oldest (0)
        ("next_id", {"next_id": -1}, lambda a: {}),
        ("faiss_index", {}, lambda a: {"faiss_index": a["faiss_index"][:40]}),
        # An index holding other keys than said (the tail's codes made to fit).
        ("faiss_index", {"indexed_to": 340}, lambda a: {"tail_codes": _tail_from(340, a)}),
    ]


@pytest.mark.parametrize(("field", "meta_change", "bad"), _memory_cases())
def test_memory_rejects_a_bad_state(
    model: EpisodicKoopman, field: str, meta_change: dict[str, int], bad: Any
) -> None:
    memory = _MemoryState(model.components()["recall"].memory)
    meta, arrays = memory.memory.get_state(with_index=True)
    meta, arrays = _copy_state(meta), _copy_state(dict(arrays))
    assert meta["indexed_from"] == 0 and meta["indexed_to"] == 352 < meta["next_id"] < 10_000
    _rejects(memory, meta | meta_change, arrays | bad(arrays), field)


def test_memory_without_its_index_needs_the_keys_and_stays_as_it_was(
    model: EpisodicKoopman,
) -> None:
    """The check that the keys are given now comes before the index's ids change."""
    memory = _MemoryState(model.components()["recall"].memory)
    meta, arrays = memory.memory.get_state(with_index=False)
    meta = _copy_state(meta) | {"n_rebuilds": 7}  # was assigned before the check
    _rejects(memory, meta, _copy_state(dict(arrays)), "keys are needed")


# -- a model file --------------------------------------------------------------------
def _with_shapes(data: CapturedModel, shapes: dict[str, list[int]]) -> bytes:
    """The model file with the given arrays' recorded shapes replaced (their bytes read
    as a prefix of the stored ones: a truncated array)."""
    manifest = json.loads(data.manifest)
    for name, shape in shapes.items():
        manifest["arrays"][name][1] = shape
    return CapturedModel(json.dumps(manifest), data.arrays).to_bytes()


@pytest.mark.parametrize("field", THETA_FIELDS)
def test_model_from_bytes_rejects_truncated_theta_arrays(
    model: EpisodicKoopman, field: str
) -> None:
    captured = capture(model)
    name = f"expert_theta_seasonal.{field}"
    shape = json.loads(captured.manifest)["arrays"][name][1]
    assert shape[0] > 1
    with pytest.raises(ValueError, match=field):
        model_from_bytes(_with_shapes(captured, {name: [shape[0] - 1, *shape[1:]]}))


def test_model_from_bytes_rejects_all_theta_arrays_truncated(model: EpisodicKoopman) -> None:
    """Every Theta array cut to one candidate (consistent with one another, not with
    the model's grid): refused, not read past their ends."""
    captured = capture(model)
    layout = json.loads(captured.manifest)["arrays"]
    shapes = {
        f"expert_theta_seasonal.{f}": [1, *layout[f"expert_theta_seasonal.{f}"][1][1:]]
        for f in ("level", "lag", "loss")
    }
    with pytest.raises(ValueError, match="Theta"):
        model_from_bytes(_with_shapes(captured, shapes))


def test_model_from_bytes_still_reads_an_untouched_file(model: EpisodicKoopman) -> None:
    captured = capture(model)
    again = model_from_bytes(_with_shapes(captured, {}))
    assert again.forecast(8) == model.forecast(8)


# -- LocalAR and SeasonalAR ----------------------------------------------------------
@pytest.mark.parametrize("expert", ["expert_ar", "expert_seasonal_ar1"])
@pytest.mark.parametrize(
    ("field", "axis"),
    [("anchor", 0), ("normal", 1), ("normal", 2), ("moment", 1), ("coef", 1), ("coef", 0)],
)
def test_autoregressive_rejects_a_truncated_array(
    model: EpisodicKoopman, expert: str, field: str, axis: int
) -> None:
    ar = model.components()[expert]
    meta, arrays = _copy_state(ar.get_state())
    assert meta["anchored"] and meta["fitted"]
    _rejects(ar, meta, arrays | {field: _cut(arrays[field], axis)}, field)


@pytest.mark.parametrize(
    ("expert", "change", "field"),
    [
        ("expert_ar", {"seen": -2}, "seen"),
        ("expert_seasonal_ar1", {"period": 0}, "period"),
        ("expert_seasonal_ar1", {"period": 12.5}, "period"),
    ],
)
def test_autoregressive_rejects_a_corrupt_count(
    model: EpisodicKoopman, expert: str, change: dict[str, Any], field: str
) -> None:
    ar = model.components()[expert]
    meta, arrays = _copy_state(ar.get_state())
    _rejects(ar, meta | change, arrays, field)


# -- EpisodeRefs' tables ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"fits.rank": lambda a: _cut(a["fits.rank"])}, "rank"),
        ({"fits.ref_mean": lambda a: _cut(a["fits.ref_mean"])}, "ref_mean"),
        ({"fits.rank": lambda a: a["fits.rank"] - 100}, "rank"),
        ({"fits.rank": lambda a: a["fits.rank"].astype(np.float64)}, "rank"),
    ],
)
def test_episode_refs_reject_a_bad_table(
    model: EpisodicKoopman, change: dict[str, Any], field: str
) -> None:
    refs = model.components()["recall"].refs
    meta, arrays = _copy_state(refs.get_state())
    bad = {name: make(arrays) for name, make in change.items()}
    _rejects(refs, meta, arrays | bad, field)


@pytest.mark.parametrize(("key", "value"), [("first", -1), ("next", -1)])
def test_episode_refs_reject_corrupt_counts(model: EpisodicKoopman, key: str, value: int) -> None:
    refs = model.components()["recall"].refs
    meta, arrays = _copy_state(refs.get_state())
    meta = meta | {"fits": meta["fits"] | {key: value}}
    _rejects(refs, meta, arrays, key)
