"""Generic contract checks run over every model configuration (river style)."""

import io
import json
import math
import pathlib

import numpy as np
import pytest
from helpers import assert_same_state, noisy_sines, state_fingerprint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from episodic_koopman import EpisodicKoopman, ModelConfig
from episodic_koopman.persistence import capture, model_from_bytes, model_to_bytes

CONFIGS = {
    "default-small": dict(delays=12, window=64, episode_horizon=12),
    "no-memory": dict(delays=12, window=64, memory=False),
    "residual": dict(delays=12, window=64, strategy="residual", stride=2),
    "transfer": dict(delays=12, window=64, strategy="transfer", stride=3),
    "energy-rank": dict(delays=12, window=64, rank=0.95, alignment="multiplicative"),
    "rff-lifting": dict(delays=6, window=64, lifting="rff", n_components=16),
    "gated-ph": dict(delays=12, window=64, drift_gate="page_hinkley", gate_span=50),
    "gated-kswin": dict(delays=12, window=64, drift_gate="kswin", gate_span=50),
    "hnsw-small": dict(delays=12, window=64, hnsw_threshold=40, capacity=60, stride=1),
    "quantile": dict(delays=12, window=64, recall_quantile=0.5, tau=2.0),
    "hedge-rule": dict(delays=12, window=64, mixture_rule="hedge", classical_experts="ar,last"),
    "no-classical": dict(delays=12, window=64, classical_experts=""),
    "theta-experts": dict(
        delays=12, window=64, classical_experts="last,seasonal,theta,theta_opt,theta_seasonal"
    ),
    "no-memory-no-classical": dict(delays=12, window=64, memory=False, classical_experts=""),
    "bank-stride-5": dict(delays=6, window=32, memory=False, stride=5),
    "growing-stride": dict(
        delays=12, window=64, stride=2, stride_doublings=2, stride_doubling_at=150
    ),
    "auto-embedding": dict(window=64, episode_horizon=12),
}


def trained(config: dict, n: int = 700) -> EpisodicKoopman:
    model = EpisodicKoopman.from_flat(config)
    model.learn_many(noisy_sines(n, seed=5) * 3 + 10)
    return model


@pytest.fixture(params=sorted(CONFIGS), scope="module")
def config(request):
    return CONFIGS[request.param]


def test_forecast_length_and_types(config):
    model = trained(config)
    for h in (1, 7, 50):
        out = model.forecast(horizon=h)
        assert len(out) == h and all(isinstance(x, float) and math.isfinite(x) for x in out)


def test_save_load_forecasts_bit_identically_and_continues_identically(config, tmp_path):
    model = trained(config)
    path = tmp_path / "model.ekm"
    model.save(path)
    loaded = EpisodicKoopman.load(path)
    assert_same_state(state_fingerprint(model), state_fingerprint(loaded))
    a, b = model.predict(horizon=30), loaded.predict(horizon=30)
    for name in ("mean", "lower", "upper"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert [r.id for r in a.recalled] == [r.id for r in b.recalled]
    more = noisy_sines(200, seed=9)
    model.learn_many(more)
    loaded.learn_many(more)
    assert model.forecast(horizon=30) == loaded.forecast(horizon=30)
    # The intervals' state (scores, p-values, pending local scales) continues identically too.
    a, b = model.predict(horizon=30, level=0.8), loaded.predict(horizon=30, level=0.8)
    assert np.array_equal(a.lower, b.lower) and np.array_equal(a.upper, b.upper)
    assert model.coverage == loaded.coverage


def test_saved_bytes_do_not_depend_on_the_clock(monkeypatch):
    """The same model saved at two times gives the same bytes (a zip member written by
    name alone carries the current time; the canonical-file check failed across seconds)."""
    import time

    model = trained(CONFIGS["default-small"], n=200)
    first = model_to_bytes(model)
    monkeypatch.setattr(time, "time", lambda: 2.0e9)
    assert model_to_bytes(model) == first


def test_a_capture_is_the_model_at_capture_time(config):
    """`capture` copies the state: learning after it changes neither the bytes it encodes
    nor the model they load into (the service captures under a lock, encodes without)."""
    model = trained(config)
    captured = capture(model)
    expected = state_fingerprint(model)
    model.learn_many(noisy_sines(200, seed=9))
    assert_same_state(state_fingerprint(model_from_bytes(captured.to_bytes())), expected)


def test_saved_file_is_versioned_and_pickle_free(config, tmp_path):
    import zipfile

    model = trained(config, n=300)
    path = tmp_path / "m.ekm"
    model.save(path)
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["arrays.bin", "manifest.json"]
        manifest = json.loads(zf.read("manifest.json"))
        assert manifest["format"] == "episodic-koopman" and manifest["format_version"] == 5
        size = len(zf.read("arrays.bin"))
    for name, (dtype, shape, offset) in manifest["arrays"].items():
        assert np.dtype(dtype) != object and not np.dtype(dtype).fields, name
        assert offset % 8 == 0 and offset + math.prod(shape) * np.dtype(dtype).itemsize <= size
    # Canonical: the loaded model saves to the same bytes.
    assert model_to_bytes(EpisodicKoopman.load(path)) == path.read_bytes()


def _format_4_bytes(model: EpisodicKoopman) -> bytes:
    """The model in format 4's layout: arrays in an ``.npz`` member, FAISS indexes in
    ``.faiss`` members."""
    import io
    import zipfile

    from episodic_koopman.persistence import model_state

    meta, arrays = model_state(model)
    indexes = {n: arrays.pop(n) for n in [k for k in arrays if k.endswith("faiss_index")]}
    manifest = {
        "format": "episodic-koopman",
        "format_version": 4,
        "class": "EpisodicKoopman",
        "params": model.to_flat(),
        "state": meta,
    }
    npz = io.BytesIO()
    np.savez(npz, **{name: np.asarray(array) for name, array in arrays.items()})
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("manifest.json", json.dumps(manifest, indent=1))
        zf.writestr("state.npz", npz.getbuffer())
        for name, index in indexes.items():
            zf.writestr(name.removesuffix("faiss_index") + "faiss", np.asarray(index).tobytes())
    return out.getvalue()


def test_format_4_files_are_refused_clearly():
    """Format 4 lacks what version 5 forecasts from: a clear error, nothing half-loaded."""
    model = EpisodicKoopman(delays=8, window=32)
    model.learn_many(noisy_sines(120, seed=9))
    with pytest.raises(ValueError, match=r"format version 4.*refit the model"):
        model_from_bytes(_format_4_bytes(model))


def test_clone_then_relearn_reproduces(config):
    model = trained(config, n=400)
    again = model.clone()
    again.learn_many(noisy_sines(400, seed=5) * 3 + 10)
    assert again.forecast(horizon=10) == model.forecast(horizon=10)


BAD_CALLS = [
    ("learn_one nan", lambda m: m.learn_one(float("nan"))),
    ("learn_one inf", lambda m: m.learn_one(float("inf"))),
    ("learn_one str", lambda m: m.learn_one("4.2")),
    ("learn_one None", lambda m: m.learn_one(None)),
    ("learn_one bool", lambda m: m.learn_one(True)),
    ("learn_one list", lambda m: m.learn_one([1.0])),
    ("learn_one dict", lambda m: m.learn_one({"a": 1.0})),
    ("learn_one complex", lambda m: m.learn_one(1 + 2j)),
    ("learn_one huge", lambda m: m.learn_one(1e200)),
    ("learn_many huge inside", lambda m: m.learn_many([1.0, -1e300, 2.0])),
    ("learn_many nan inside", lambda m: m.learn_many([1.0, 2.0, float("nan"), 3.0])),
    ("learn_many str inside", lambda m: m.learn_many([1.0, "x"])),
    ("learn_many 2-D", lambda m: m.learn_many(np.ones((3, 2)))),
    ("learn_many object", lambda m: m.learn_many(42)),
    ("forecast 0", lambda m: m.forecast(horizon=0)),
    ("forecast -1", lambda m: m.forecast(horizon=-1)),
    ("forecast float", lambda m: m.forecast(horizon=2.5)),
    ("forecast huge", lambda m: m.forecast(horizon=10**9)),
    ("predict level 1", lambda m: m.predict(horizon=3, level=1.0)),
    ("predict level nan", lambda m: m.predict(horizon=3, level=float("nan"))),
    ("episodes negative", lambda m: m.episodes(offset=-1)),
    ("save to missing dir", lambda m: m.save(pathlib.Path("/nonexistent/dir/m.ekm"))),
]


@pytest.mark.parametrize("name,call", BAD_CALLS, ids=[b[0] for b in BAD_CALLS])
def test_bad_input_raises_and_leaves_state_unchanged(config, name, call):
    if config.get("missing", "error") != "error" and "nan" in name:
        pytest.skip("missing-value policy accepts NaN by design")
    model = trained(config, n=300)
    before = state_fingerprint(model)
    forecast_before = model.forecast(horizon=5)
    with pytest.raises((ValueError, TypeError, OSError)):
        call(model)
    assert_same_state(before, state_fingerprint(model))
    assert model.forecast(horizon=5) == forecast_before


def test_multichannel_bad_keys_leave_state_unchanged():
    model = EpisodicKoopman(delays=6, window=32)
    for k in range(100):
        model.learn_one({"a": math.sin(k / 5), "b": math.cos(k / 5)})
    before = state_fingerprint(model)
    for bad in ({"a": 1.0}, {"a": 1.0, "b": 2.0, "c": 3.0}, {"a": 1.0, "b": "x"}, 3.0, {}):
        with pytest.raises((ValueError, TypeError)):
            model.learn_one(bad)
    with pytest.raises(ValueError):
        model.learn_many([{"a": 1.0, "b": 2.0}, {"a": 1.0, "b": float("nan")}])
    assert_same_state(before, state_fingerprint(model))


junk = st.one_of(
    st.text(max_size=5),
    st.none(),
    st.booleans(),
    st.lists(st.floats(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.floats(), max_size=3),
    st.sampled_from([float("nan"), float("inf"), float("-inf")]),
    st.complex_numbers(allow_nan=False, allow_infinity=False).filter(lambda z: z.imag != 0),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=junk)
def test_hypothesis_junk_never_changes_state(value):
    model = _hypothesis_model()
    before = state_fingerprint(model)
    with pytest.raises((ValueError, TypeError)):
        model.learn_one(value)
    assert_same_state(before, state_fingerprint(model))


_MODEL_CACHE: dict = {}


def _hypothesis_model() -> EpisodicKoopman:
    if "m" not in _MODEL_CACHE:
        _MODEL_CACHE["m"] = trained(CONFIGS["default-small"], n=300)
    return _MODEL_CACHE["m"]


@pytest.mark.parametrize(
    "params",
    [
        dict(delays=0),
        dict(delays=-3),
        dict(delays=10**6),
        dict(delays=2.5),
        dict(window=1),
        dict(window=10**9),
        dict(rank=0),
        dict(rank=1.5),
        dict(strategy="magic"),
        dict(tau=0),
        dict(tau=float("nan")),
        dict(level=1.5),
        dict(top_k=10, candidates=5),
        dict(drift_gate="adwin"),
        dict(memory="yes"),
        dict(missing="guess"),
    ],
)
def test_absurd_parameters_are_rejected_with_a_named_message(params):
    name = next(iter(params))
    with pytest.raises((ValueError, TypeError), match=name if name != "top_k" else "candidates"):
        EpisodicKoopman.from_flat(params)


def test_too_many_features_for_the_channel_count_is_rejected_before_learning():
    model = EpisodicKoopman(delays=512, window=1024)
    with pytest.raises(ValueError, match="exceeds"):
        model.learn_one({f"c{i}": 1.0 for i in range(5)})
    assert model.n_observations == 0 and model.channels is None
    model.learn_one(1.0)  # a single series still fits


def test_reading_never_changes_what_the_model_does(config):
    """A model queried at every step ends bit-identical to one never queried until the end."""
    y = noisy_sines(500, seed=11) * 3 + 10
    quiet, chatty = EpisodicKoopman.from_flat(config), EpisodicKoopman.from_flat(config)
    for k, value in enumerate(y):
        quiet.learn_one(float(value))
        chatty.learn_one(float(value))
        if k % 3 == 0:
            chatty.predict(horizon=7)
            _ = chatty.memory_size, chatty.coverage
    assert_same_state(state_fingerprint(quiet), state_fingerprint(chatty))
    a, b = quiet.predict(horizon=12), chatty.predict(horizon=12)
    assert np.array_equal(a.mean, b.mean) and np.array_equal(a.upper, b.upper)


def _seen(forecast) -> tuple:
    arrays = (forecast.mean, forecast.lower, forecast.upper)
    return tuple(a.tobytes() for a in arrays), [r.id for r in forecast.recalled]


def test_forecasts_between_scored_ticks_are_pure(config):
    """At every tick, scored or between, the forecast is the same whether the model learned
    one by one forecasting at every tick, in random chunks forecasting only at their ends,
    or was saved and loaded at a tick between scored ticks: a forecast changes nothing,
    and the fit and recall in force are saved with the model."""
    y = noisy_sines(470, seed=13) * 3 + 10
    start = 380
    steady = EpisodicKoopman.from_flat(config)
    steady.learn_many(y[:start])
    expected = {}
    for n in range(start, y.size):
        expected[n] = _seen(steady.predict(horizon=9))
        steady.learn_one(float(y[n]))
    rng = np.random.default_rng(len(config))
    chunked = EpisodicKoopman.from_flat(config)
    cuts = np.sort(rng.choice(np.arange(start + 1, y.size), 25, replace=False))
    for a, b in zip([0, *cuts], [*cuts, y.size], strict=True):
        chunked.learn_many(y[a:b])
        if b in expected:
            assert _seen(chunked.predict(horizon=9)) == expected[b], b
    restored = EpisodicKoopman.from_flat(config)
    restored.learn_many(y[:start])
    if restored.config.stride > 1:  # else every tick is scored
        while restored.n_observations == restored._pipeline.in_force.recall_tick:
            restored.learn_one(float(y[restored.n_observations]))  # to a tick between
    restored = model_from_bytes(capture(restored).to_bytes())
    if restored.config.stride > 1:
        assert restored.n_observations != restored._pipeline.in_force.recall_tick
    for n in range(restored.n_observations, y.size):
        assert _seen(restored.predict(horizon=9)) == expected[n], n
        restored.learn_one(float(y[n]))


READS = {
    "spectrum": lambda m: m.spectrum(),
    "episodes": lambda m: m.episodes(limit=3),
    "expert_weights": lambda m: m.expert_weights(),
    "memory_size": lambda m: m.memory_size,
    "coverage": lambda m: m.coverage,
    "another_forecast": lambda m: m.predict(horizon=3, level=0.5),
}


def test_a_forecast_does_not_depend_on_the_reads_before_it(config):
    """Whatever is read first at the same tick, the forecast equals that of a model only
    forecasting. (A spectrum read once cached a recall made before due episodes were filed.)"""
    y = noisy_sines(400, seed=5) * 3 + 10
    quiet, reader = EpisodicKoopman.from_flat(config), EpisodicKoopman.from_flat(config)
    names = sorted(READS)
    for k, value in enumerate(y):
        quiet.learn_one(float(value))
        reader.learn_one(float(value))
        if k < 40:
            continue
        READS[names[k % len(names)]](reader)
        a, b = quiet.predict(horizon=12), reader.predict(horizon=12)
        assert np.array_equal(a.mean, b.mean), (k, names[k % len(names)])
        assert [r.id for r in a.recalled] == [r.id for r in b.recalled], k


def _saved_before(model: EpisodicKoopman, *params: str) -> bytes:
    """``model``'s file as a version without ``params`` wrote it."""
    import zipfile

    old = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(model_to_bytes(model))) as src,
        zipfile.ZipFile(old, "w", zipfile.ZIP_STORED) as dst,
    ):
        for name in src.namelist():
            data = src.read(name)
            if name == "manifest.json":
                manifest = json.loads(data)
                for param in params:
                    del manifest["params"][param]
                data = json.dumps(manifest).encode()
            dst.writestr(name, data)
    return old.getvalue()


def test_a_file_from_before_the_growing_stride_loads_with_a_fixed_stride():
    model = EpisodicKoopman(delays=8, window=32, config=ModelConfig(stride_doublings=0))
    model.learn_many(noisy_sines(300, seed=4))
    loaded = model_from_bytes(_saved_before(model, "stride_doublings", "stride_doubling_at"))
    assert loaded.config.stride_doublings == 0 and ModelConfig().stride_doublings > 0
    assert model_to_bytes(loaded) == model_to_bytes(model)


def test_a_file_from_before_early_grading_loads_without_it():
    model = EpisodicKoopman(delays=8, window=32, config=ModelConfig(early_grading=False))
    model.learn_many(noisy_sines(300, seed=4))
    loaded = model_from_bytes(_saved_before(model, "early_grading"))
    assert not loaded.config.early_grading and ModelConfig().early_grading
    assert model_to_bytes(loaded) == model_to_bytes(model)


def test_a_file_from_before_detrend_loads_without_it():
    model = EpisodicKoopman(delays=8, window=32)
    model.learn_many(noisy_sines(300, seed=4))
    loaded = model_from_bytes(_saved_before(model, "detrend"))
    assert loaded.config.detrend is False
    assert model_to_bytes(loaded) == model_to_bytes(model)


def test_a_file_from_before_the_trend_gate_loads_without_it():
    model = EpisodicKoopman(delays=8, window=32, config=ModelConfig(trend_gate=None))
    model.learn_many(noisy_sines(300, seed=4) + 0.05 * np.arange(300))
    loaded = model_from_bytes(_saved_before(model, "trend_gate"))
    assert loaded.config.trend_gate is None and ModelConfig().trend_gate is not None
    assert model_to_bytes(loaded) == model_to_bytes(model)


def test_a_file_from_before_the_theta_expert_keeps_its_bank():
    before = "last,seasonal,damped,ar,seasonal_ar"
    model = EpisodicKoopman(delays=8, window=32, config=ModelConfig(classical_experts=before))
    model.learn_many(noisy_sines(300, seed=4))
    assert "theta_seasonal" in ModelConfig().classical_names()
    for lacking in ((), ("classical_experts",)):  # as stored, and should a record lack it
        loaded = model_from_bytes(_saved_before(model, *lacking))
        assert loaded.config.classical_experts == before
        assert model_to_bytes(loaded) == model_to_bytes(model)
        more = noisy_sines(40, seed=9)
        loaded.learn_many(more)
        twin = model_from_bytes(model_to_bytes(model))
        twin.learn_many(more)
        assert np.array_equal(loaded.forecast(24), twin.forecast(24))
