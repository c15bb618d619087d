"""What forecasts reuse between calls (conjugate groups, eigenvalue terms) changes nothing:
each reuse is keyed on every value its result depends on, so no call order leaves a trace."""

import itertools

import numpy as np
from helpers import noisy_sines

from episodic_koopman import EpisodicKoopman, recall, spectrum
from episodic_koopman.recall import KeyWeights, exact_distances
from episodic_koopman.spectrum import Signature, canonical_order


def _fresh_order(eigenvalues: np.ndarray, amplitudes: np.ndarray) -> np.ndarray:
    spectrum._last_groups = None
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


def test_exact_distances_reuse_eigenvalue_terms_without_changing_them():
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
    recall._eigenvalue_terms_kept.clear()
    cold = exact_distances(query, state, eigs, modes, states, weights, ranks)
    assert len(recall._eigenvalue_terms_kept) == 6  # rows 1 and 5 share a spectrum
    warm = exact_distances(query, state, eigs, modes, states, weights, ranks)
    np.testing.assert_array_equal(cold, warm)
    # Each row alone (nothing kept) gives the distance it has in the batch.
    for i in range(7):
        recall._eigenvalue_terms_kept.clear()
        alone = exact_distances(
            query,
            state,
            eigs[i : i + 1],
            modes[i : i + 1],
            states[i : i + 1],
            weights,
            ranks[i : i + 1],
        )
        np.testing.assert_array_equal(alone, cold[i : i + 1])
    # With mode shapes in the distance, the matchings are made again: the same distances
    # where the shapes are equal (a zero-weight-like case with explicit zero modes).
    with_modes = KeyWeights(modes=0.5)
    query_m = Signature(query_eigs, np.zeros((r, 2), dtype=np.complex128), rank=4)
    modes_m = np.zeros((7, r, 2), dtype=np.complex128)
    np.testing.assert_array_equal(
        exact_distances(query_m, state, eigs, modes_m, states, with_modes, ranks), cold
    )
    # A full store is emptied rather than grown.
    for i in range(recall._EIGENVALUE_TERMS_KEPT + 5):
        eig = np.zeros((1, r), dtype=np.complex128)
        eig[0, 0] = i + 1.0
        exact_distances(query, state, eig, modes[:1], states[:1], weights, np.array([1]))
    assert len(recall._eigenvalue_terms_kept) <= recall._EIGENVALUE_TERMS_KEPT


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
