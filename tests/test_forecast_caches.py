"""What forecasts reuse between calls (conjugate groups) changes nothing, and rows ranked
together or alone get the same distances: each reuse is keyed on every value its result
depends on, so no call order leaves a trace."""

import itertools

import numpy as np
from helpers import noisy_sines

from episodic_koopman import EpisodicKoopman, recall, spectrum
from episodic_koopman.recall import KeyWeights
from episodic_koopman.rerank import exact_distances, nearest_exact
from episodic_koopman.spectrum import Signature, canonical_order


def _fresh_order(eigenvalues: np.ndarray, amplitudes: np.ndarray) -> np.ndarray:
    spectrum._last_spectrum = None
    return canonical_order(eigenvalues, amplitudes)


def test_canonical_order_is_the_same_whatever_set_was_ordered_before():
    rng = np.random.default_rng(5)
    pairs = 0.9 * np.exp(1j * rng.uniform(0.1, 3.0, 4))
    lam = np.concatenate([pairs, pairs.conj(), [0.5, -0.3]])
    other = lam[::-1].copy()  # the same values in another order: other groups
    amplitudes = [rng.standard_normal(lam.size) for _ in range(3)]
    expected = [_fresh_order(lam, amp) for amp in amplitudes]
    expected_other = _fresh_order(other, amplitudes[0])
    for amp, want in zip(amplitudes, expected, strict=True):
        # After a different set, and after the same set with other amplitudes.
        canonical_order(other, amp)
        np.testing.assert_array_equal(canonical_order(lam, amp), want)
        np.testing.assert_array_equal(canonical_order(lam, amp), want)
    np.testing.assert_array_equal(canonical_order(other, amplitudes[0]), expected_other)
    # Conjugates stay adjacent, the positive frequency first.
    order = canonical_order(lam, amplitudes[0])
    for a, b in itertools.pairwise(order):
        if lam[a].imag > 1e-9:
            assert lam[b] == lam[a].conjugate()


def test_canonical_order_keys_on_dtype_and_shape_not_only_bytes():
    lam = np.array([0.5 + 0.5j, 0.5 - 0.5j])
    as_reals = lam.view(np.float64)  # the same bytes, four real eigenvalues
    amp = np.array([1.0, 2.0])
    np.testing.assert_array_equal(canonical_order(lam, amp), _fresh_order(lam, amp))
    ours = canonical_order(as_reals, np.arange(4.0))
    assert sorted(ours.tolist()) == [0, 1, 2, 3]
    np.testing.assert_array_equal(ours, _fresh_order(as_reals, np.arange(4.0)))


def test_exact_distances_of_a_row_alone_are_those_it_has_in_a_batch():
    rng = np.random.default_rng(11)
    r = 6
    query_eigs = np.zeros(r, dtype=np.complex128)
    query_eigs[:4] = rng.standard_normal(4) + 1j * rng.standard_normal(4)
    query = Signature(query_eigs, np.zeros((r, 0), dtype=np.complex128), rank=4)
    eigs = np.zeros((7, r), dtype=np.complex128)
    ranks = rng.integers(1, r + 1, size=7)
    for i, rank in enumerate(ranks):
        eigs[i, :rank] = rng.standard_normal(rank) + 1j * rng.standard_normal(rank)
    eigs[5] = eigs[1]  # episodes of one fit share their eigenvalues
    ranks[5] = ranks[1]
    modes = np.zeros((7, r, 0), dtype=np.complex128)
    states = rng.standard_normal((7, 3))
    state = rng.standard_normal(3)
    weights = KeyWeights()
    batch = exact_distances(query, state, eigs, modes, states, weights, ranks)
    assert batch[5] == batch[1] or states[5].tolist() != states[1].tolist()
    for i in range(7):
        alone = exact_distances(
            query,
            state,
            eigs[i : i + 1],
            modes[i : i + 1],
            states[i : i + 1],
            weights,
            ranks[i : i + 1],
        )
        np.testing.assert_array_equal(alone, batch[i : i + 1])
    # With mode shapes in the distance: the same distances where the shapes are equal
    # (a zero-weight-like case with explicit zero modes).
    with_modes = KeyWeights(modes=0.5)
    query_m = Signature(query_eigs, np.zeros((r, 2), dtype=np.complex128), rank=4)
    modes_m = np.zeros((7, r, 2), dtype=np.complex128)
    np.testing.assert_array_equal(
        exact_distances(query_m, state, eigs, modes_m, states, with_modes, ranks), batch
    )
    # The compiled rerank (zero mode weight) keeps the same rows and distances, whatever
    # ranks were asked for before.
    ids = np.arange(7, dtype=np.int64)
    records = {"eigenvalues": eigs, "modes": modes, "state": states, "rank": ranks}
    for top_k in (7, 3, 1, 3):
        rows, distances = nearest_exact(query, state, ids, records, weights, top_k)
        expected = np.lexsort((ids, batch))[:top_k]
        np.testing.assert_array_equal(rows, expected)
        np.testing.assert_array_equal(distances, batch[expected])


def test_a_forecast_does_not_depend_on_the_forecasts_asked_for_before():
    y = noisy_sines(1100, seed=4) * 3 + 10
    asked = EpisodicKoopman(delays=12, window=64, episode_horizon=12)
    alone = EpisodicKoopman(delays=12, window=64, episode_horizon=12)
    asked.learn_many(y[:1000])
    alone.learn_many(y[:1000])
    for n in range(1000, 1011):  # across a scored tick (every 8 steps)
        asked.learn_one(float(y[n]))
        alone.learn_one(float(y[n]))
        asked.forecast(24)
        asked.predict(18)
        asked.forecast(24)
        assert asked.forecast(12) == alone.forecast(12)
        a, b = asked.predict(7), alone.predict(7)
        np.testing.assert_array_equal(a.lower, b.lower)
        np.testing.assert_array_equal(a.upper, b.upper)
        assert [e.id for e in a.recalled] == [e.id for e in b.recalled]


def test_the_rerank_reads_what_a_full_expansion_gives():
    """Candidates are reranked on `match_parts`, and only the kept are expanded: the same
    columns, in the same order, as expanding every candidate and keeping rows after."""
    y = noisy_sines(900, seed=6) * 2 + 4
    model = EpisodicKoopman(delays=12, window=64, episode_horizon=12)
    model.learn_many(y)
    recaller = model._pipeline.recaller
    ids = recaller.memory.live_ids()[-40:]
    stored = recaller.memory.get(ids)
    full = recaller.refs.expand(stored)
    parts = recaller.refs.match_parts(stored)
    for name, column in parts.items():
        if name != "positions":  # of the fits' rows, for expand_kept
            np.testing.assert_array_equal(column, full[name])
    order = np.array([5, 0, 17, 39])
    given_states = recaller.refs.expand(
        {name: column[order] for name, column in stored.items()}, states=parts["state"][order]
    )
    from_parts = recaller.refs.expand_kept(stored, parts, order)
    for kept in (given_states, from_parts):
        assert list(kept) == list(full)
        for name, column in full.items():
            np.testing.assert_array_equal(kept[name], column[order])
            assert kept[name].dtype == column.dtype


def test_one_window_is_normalised_as_in_a_batch():
    """The query's state window gives the floats of `normalized_states` (which keys
    and the rerank use), flat and constant windows included."""
    rng = np.random.default_rng(8)
    for i in range(400):
        d = int(rng.integers(1, 70))
        scale = 10 ** rng.uniform(-8, 8)
        window = rng.standard_normal((d, 1)) * scale + rng.standard_normal() * scale * 50
        if i % 4 == 1:
            window[:] = window[0]  # a constant window: scale 1
        elif i % 4 == 2:
            window = rng.poisson(40, size=(d, 1)).astype(np.float64)
        ours = recall.normalized_state(window)
        batch = recall.normalized_states(window[None])[0]
        assert ours.shape == batch.shape
        assert ours.tobytes() == batch.tobytes()
    two = rng.standard_normal((9, 2))  # several channels: the batch path itself
    assert (
        recall.normalized_state(two).tobytes() == recall.normalized_states(two[None])[0].tobytes()
    )


def test_a_signature_reused_from_the_last_query_equals_a_fresh_one():
    rng = np.random.default_rng(2)
    pairs = 0.95 * np.exp(1j * rng.uniform(0.1, 3.0, 3))
    lam = np.concatenate([pairs, pairs.conj(), [0.4]])
    other = lam.copy()  # the same values, another array: never taken for the cached one
    other[-1] = 0.3
    no_modes = np.zeros((0, lam.size), dtype=np.complex128)

    def make(eigenvalues: np.ndarray, amplitudes: np.ndarray) -> Signature:
        return spectrum.make_signature(
            eigenvalues, amplitudes, no_modes, slice(0, 0), slice(0, None), r_max=10
        )

    for _ in range(20):
        amplitudes = rng.standard_normal(lam.size)
        ours = make(lam, amplitudes)
        spectrum._last_spectrum = None
        fresh = make(lam, amplitudes)
        np.testing.assert_array_equal(ours.eigenvalues, fresh.eigenvalues)
        assert ours.rank == fresh.rank and ours.modes.shape == fresh.modes.shape
        assert make(lam, amplitudes) is fresh  # the same order: reused
        assert make(other, amplitudes).eigenvalues.tobytes() != fresh.eigenvalues.tobytes()


def test_weights_without_a_prior_equal_those_of_a_restored_mixture():
    """Once the prior weighs nothing, weights skip it: the same floats as a mixture
    restored from the same state, which checks the prior again."""
    from episodic_koopman.mixture import ExpertMixture

    rng = np.random.default_rng(3)
    names = ["plain", "analog", "last", "ar"]
    mixture = ExpertMixture(names, horizon=6, decay=0.05, eta=4.0)
    patterns = [np.array([True, True, True, True]), np.array([True, False, True, True])]
    for t in range(4000):  # each step ahead ~670 times: the prior fades below 1e-9
        step = t % 6
        available = patterns[t % 7 == 0]
        mixture.update(step, rng.exponential(size=len(names)), available)
        if t % 50 == 49:
            restored = ExpertMixture(names, horizon=6, decay=0.05, eta=4.0)
            restored.set_state(mixture.get_state())
            for pattern in patterns:
                ours, theirs = mixture.weights(pattern, 6), restored.weights(pattern, 6)
                assert ours.tobytes() == theirs.tobytes()
    assert mixture._prior_gone  # the path under test was taken


def test_updates_at_evenly_spaced_steps_equal_updates_step_by_step():
    """`update_many` reads evenly spaced steps through a slice: the same floats as one
    update per step (every rule, some experts asleep or all awake)."""
    from episodic_koopman.mixture import ExpertMixture
    from episodic_koopman.regret_rules import _columns

    assert _columns(np.array([2, 10, 18])) == slice(2, 19, 8)
    assert _columns(np.array([4])) == slice(4, 5)
    assert isinstance(_columns(np.array([1, 2, 4])), np.ndarray)
    assert isinstance(_columns(np.array([5, 3])), np.ndarray)
    rng = np.random.default_rng(12)
    names = ["plain", "analog", "last", "ar", "damped"]
    for rule in ("hedge", "boa", "mlpoly"):
        batched = ExpertMixture(names, horizon=24, decay=0.05, eta=4.0, fast_decay=0.2, rule=rule)
        single = ExpertMixture(names, horizon=24, decay=0.05, eta=4.0, fast_decay=0.2, rule=rule)
        for t in range(300):
            first = t % 8
            steps = np.arange(first, 24, 8)[: 1 + t % 3]
            if t % 5 == 0:
                steps = np.array([first, first + 1, first + 3])  # not evenly spaced
            losses = rng.exponential(size=(steps.size, len(names)))
            regrets = rng.standard_normal((steps.size, len(names)))
            available = rng.random((steps.size, len(names))) > (0.3 if t % 2 else 0.0)
            batched.update_many(steps, losses, available, regrets)
            for i, step in enumerate(steps):
                single.update(int(step), losses[i], available[i], regrets[i])
        for name, array in batched.get_state().items():
            assert array.tobytes() == single.get_state()[name].tobytes(), (rule, name)


def test_hedge_weights_of_full_records_equal_numpys_formula():
    """All experts available with full records: the compiled weights are the floats of
    NumPy's softmax of ``-eta (L / min L - 1)`` per column (one column too, where
    NumPy sums pairwise)."""
    from episodic_koopman.hedge_rule import hedge_weights

    rng = np.random.default_rng(13)
    for i in range(200):
        n_experts, horizon = 3 + i % 10, 24 if i % 4 else 1
        losses = rng.exponential(size=(n_experts, horizon)) * 10 ** rng.uniform(-6, 3)
        losses[rng.integers(0, n_experts), rng.integers(0, horizon)] = 0.0  # a best loss of 0
        best = np.minimum.reduce(losses, axis=0)
        logits = -4.0 * (losses / np.maximum(best, 1e-12) - 1.0)
        w = np.exp(logits - np.maximum.reduce(logits, axis=0, keepdims=True))
        want = w / np.add.reduce(w, axis=0, keepdims=True)
        mass = np.ones_like(losses)
        available = np.ones(n_experts, dtype=bool)
        ours, all_scored, prior_gone = hedge_weights(
            losses * mass, mass, np.ones(n_experts), False, available, 4.0, 0.2, False
        )
        assert all_scored and prior_gone
        assert ours.tobytes() == want.tobytes()


def test_leading_sums_add_in_numpys_order():
    """`leading_sum` is ``np.add.reduce(x, axis=0)`` to the bit: row after row with
    several columns, pairwise down a single one (any length)."""
    from episodic_koopman.reduction_order import leading_sum

    rng = np.random.default_rng(16)
    for n in [*range(1, 40), 127, 128, 129, 300, 1000, 4099]:
        for m in (1, 3):
            x = rng.exponential(size=(n, m)) * 10 ** rng.uniform(-8, 8, size=(n, m))
            want = np.add.reduce(x, axis=0)
            assert [leading_sum(x, j) for j in range(m)] == want.tolist(), (n, m)


def test_mixed_tracks_equal_numpys_weighted_sums():
    """The combiner's compiled clip and weighted sums give NumPy's floats, with a
    single step and channel too."""
    from episodic_koopman.combiner import _mixed

    rng = np.random.default_rng(17)
    for i in range(300):
        n_experts, steps, c = 1 + i % 12, 1 + i % 25, 1 + i % 2
        tracks = rng.standard_normal((n_experts, steps, c)) * 10 ** rng.uniform(-3, 3)
        tracks[0, 0, 0] = np.nan if i % 9 == 0 else tracks[0, 0, 0]
        spreads = np.abs(rng.standard_normal((n_experts, steps, c)))
        weights = rng.random((n_experts, steps + 2))[:, :steps]  # a view, as the cache gives
        low = rng.standard_normal(c) - 1.0
        high = low + rng.exponential(size=c) * 3
        clipped = np.clip(tracks, low, high)
        want_mean = np.add.reduce(weights[:, :, None] * clipped, axis=0)
        want_spread = np.add.reduce(weights[:, :, None] * spreads, axis=0)
        mean, spread = _mixed(tracks, spreads, weights, low, high, True)
        assert tracks.tobytes() == clipped.tobytes()  # clipped in place
        assert mean.tobytes() == want_mean.tobytes()
        assert spread.tobytes() == want_spread.tobytes()


def test_the_unwrapped_einsum_gives_numpys_floats():
    """The einsums of the forecast path, by the C function NumPy's wrapper calls."""
    from episodic_koopman.einsum import einsum

    rng = np.random.default_rng(14)
    for _ in range(50):
        weights, tracks = rng.random(5), rng.standard_normal((5, 24, 2))
        paths = rng.standard_normal((2, 32, 9))[:, :24]
        z = np.empty((9, 2)).T  # Fortran order, as `LocalAR._ahead` makes it
        z[:] = rng.standard_normal((2, 9))
        windows = rng.standard_normal((16, 32, 1))
        for spec, operands in (
            ("e,ehc->hc", (weights, tracks)),
            ("chi,ci->hc", (paths, z)),
            ("bij,bij->bj", (windows, windows)),
        ):
            ours = einsum(spec, *operands)
            assert ours.tobytes() == np.einsum(spec, *operands).tobytes()


def test_zscore_alignment_without_flat_windows_equals_the_masked_quotients():
    """Where no matched window is flat, `_zscored` divides directly: the floats of the
    masked quotients it takes otherwise."""
    from episodic_koopman.corrections import _zscored

    rng = np.random.default_rng(15)
    for i in range(100):
        continuation = rng.standard_normal((5, 24, 2)) * 50 + 100
        mean_then = rng.standard_normal((5, 1, 2)) * 10 ** rng.uniform(-3, 3)
        std_then = rng.exponential(size=(5, 1, 2))
        if i % 3 == 0:
            std_then[rng.integers(0, 5), 0, 0] = 0.0  # a flat window: the masked path
        mean_now, std_now = rng.standard_normal((1, 2)), rng.exponential(size=(1, 2))
        ok = std_then > 1e-12 * np.maximum(np.abs(mean_then), 1.0)
        ratio = np.where(ok, std_now / np.where(ok, std_then, 1.0), 1.0)
        want = (continuation - mean_then) * ratio + mean_now
        ours = _zscored(continuation, mean_then, std_then, mean_now, std_now)
        assert ours.tobytes() == want.tobytes()


def test_compiled_analog_correction_equals_numpys():
    """`Analog.correct` by its compiled pass gives the floats of `align`, `_extend` and
    `_weighted` (every alignment, flat and NaN windows, horizons past the memory's)."""
    from episodic_koopman.corrections import Analog, RecallContext

    rng = np.random.default_rng(18)
    for i in range(400):
        k, d, c = 1 + i % 7, 2 + i % 31, 1 + i % 3
        stored, horizon = 1 + i % 26, 1 + (7 * i) % 37
        scale = 10 ** rng.uniform(-3, 4)
        level = rng.standard_normal() * scale * (i % 3) * 5
        history = rng.standard_normal((k, d, c)) * scale + level
        if i % 7 == 0:
            history[0, :, 0] = level  # a flat window
        if i % 11 == 0:
            history[0, :, 0] = np.nan
        records = {
            "continuation": rng.standard_normal((k, stored, c)) * scale + level,
            "history": history,
        }
        weights = rng.random(k)
        weights /= weights.sum()
        plain = rng.standard_normal((horizon, c)) * scale + level
        context = RecallContext(
            plain=plain,
            history=rng.standard_normal((d + 3, c)) * scale + level,
            ref_mean=np.zeros(c),
            ref_scale=np.ones(c),
            lift=lambda *_: np.zeros(0),
            readout=slice(0, c),
            stabilize="clip",
        )
        now = context.history[-d:]
        for alignment in ("zscore", "last", "additive", "multiplicative", "none"):
            analog = Analog(alignment, blend=0.5 if i % 2 else 1.0)  # type: ignore[arg-type]
            mean, spread = analog.correct(context, records, weights)
            want = analog._numpy_correct(plain, records["continuation"], history, now, weights)
            assert mean.tobytes() == want[0].tobytes(), (i, alignment)
            assert spread.tobytes() == want[1].tobytes(), (i, alignment)


def test_one_channel_windows_are_normalised_as_numpy_normalises_them():
    """The compiled one-channel path gives NumPy's floats, bit for bit, level-free and
    constant windows included."""
    rng = np.random.default_rng(21)
    for trial in range(400):
        b, d = int(rng.integers(1, 12)), int(rng.integers(1, 70))
        scale = 10 ** rng.uniform(-8, 8)
        windows = rng.standard_normal((b, d, 1)) * scale + rng.standard_normal() * scale * 50
        if trial % 4 == 1:
            windows[:] = windows[:, :1]  # constant windows: scale 1
        elif trial % 4 == 2:
            windows = rng.poisson(40, size=(b, d, 1)).astype(np.float64)
        mean = windows.sum(axis=1, keepdims=True) / d
        centered = windows - mean
        std = np.sqrt(np.einsum("bij,bij->bj", centered, centered) / d)[:, None, :]
        scale = np.where(std > 1e-12 * np.maximum(np.abs(mean), 1.0), std, 1.0)
        expected = (centered / scale).reshape(b, -1)
        np.testing.assert_array_equal(recall.normalized_states(windows), expected)
