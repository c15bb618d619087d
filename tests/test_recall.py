import numpy as np
import pytest

from episodic_koopman import EpisodicKoopman
from episodic_koopman.corrections import Analog, RecallContext, Residual, Transfer, align
from episodic_koopman.recall import KeyWeights, attention_weights, episode_key
from episodic_koopman.rerank import exact_distances, nearest_exact
from episodic_koopman.spectrum import Signature


def sine_regime(n: int, period: float, amplitude: float, start: int = 0) -> np.ndarray:
    t = np.arange(start, start + n)
    return amplitude * np.sin(2 * np.pi * t / period)


def test_attention_weights_softmax_and_ordering():
    w = attention_weights(np.array([1.0, 2.0, 3.0]), tau=1.0, scale=1.0)
    assert w.sum() == pytest.approx(1.0)
    assert w[0] > w[1] > w[2]
    np.testing.assert_allclose(w[0] / w[1], np.e)


def test_key_distance_equals_exact_distance_when_canonical_order_is_optimal():
    rng = np.random.default_rng(0)
    weights = KeyWeights(1.0, 0.5, 1.0)
    for _ in range(20):
        eig = np.zeros(6, complex)
        eig[:4] = np.array([0.9 + 0.4j, 0.9 - 0.4j, 0.2 + 0.0j, -0.6 + 0.0j])
        modes = np.zeros((6, 3), complex)
        modes[:4] = rng.standard_normal((4, 3)) + 1j * rng.standard_normal((4, 3))
        a = Signature(eig, modes, 4)
        # A small perturbation keeps the identity as the optimal matching.
        b = Signature(eig + 0.01 * rng.standard_normal(6) * (eig != 0), modes + 0.05, 4)
        sa, sb = rng.standard_normal(10), rng.standard_normal(10)
        key_d = np.linalg.norm(
            episode_key(a, sa, weights).astype(float) - episode_key(b, sb, weights).astype(float)
        )
        exact = exact_distances(a, sa, b.eigenvalues[None], b.modes[None], sb[None], weights)[0]
        assert exact == pytest.approx(key_d, rel=1e-5)
        same = exact_distances(a, sa, a.eigenvalues[None], a.modes[None], sa[None], weights)[0]
        assert same == pytest.approx(0.0, abs=1e-12)


def test_exact_distance_is_invariant_to_eigenvalue_order():
    rng = np.random.default_rng(5)
    weights = KeyWeights(1.0, 0.5, 1.0)
    eig = rng.standard_normal(5) + 1j * rng.standard_normal(5)
    modes = rng.standard_normal((5, 2)) + 1j * rng.standard_normal((5, 2))
    state = rng.standard_normal(4)
    query = Signature(eig, modes, 5)
    perm = np.array([3, 0, 4, 1, 2])
    d = exact_distances(query, state, eig[perm][None], modes[perm][None], state[None], weights)
    assert d[0] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("weights", [KeyWeights(0.1, 0.0, 1.0), KeyWeights(1.0, 0.5, 1.0)])
def test_nearest_exact_equals_ranking_every_candidate(weights):
    """The pruned rerank returns the rows and distances (bit for bit) of ranking all
    candidates by exact distance with ties broken by id, duplicates and padding included."""
    rng = np.random.default_rng(8)
    r, q, d = 6, 3, 8
    for trial in range(60):
        n, top_k = int(rng.integers(1, 20)), int(rng.integers(1, 7))
        ranks = rng.integers(0, r + 1, n)
        eig = np.zeros((n, r), complex)
        modes = np.zeros((n, r, q), complex)
        for i, rank in enumerate(ranks):
            eig[i, :rank] = rng.standard_normal(rank) + 1j * rng.standard_normal(rank)
            modes[i, :rank] = rng.standard_normal((rank, q)) + 1j * rng.standard_normal((rank, q))
        states = rng.standard_normal((n, d)) * rng.uniform(0.01, 2.0)
        if n > 3:  # exact ties: repeated candidates under other ids
            eig[1], modes[1], states[1], ranks[1] = eig[0], modes[0], states[0], ranks[0]
            eig[3], modes[3], states[3], ranks[3] = eig[2], modes[2], states[2], ranks[2]
        ids = rng.permutation(1000)[:n].astype(np.int64)
        query = Signature(eig[0] * 1.01, modes[0], int(ranks[0]))
        state = states[trial % n] + 0.1 * rng.standard_normal(d)
        records = {"eigenvalues": eig, "modes": modes, "state": states, "rank": ranks}
        every = exact_distances(query, state, eig, modes, states, weights, ranks)
        expected = np.lexsort((ids, every))[:top_k]
        rows, distances = nearest_exact(query, state, ids, records, weights, top_k)
        np.testing.assert_array_equal(rows, expected)
        np.testing.assert_array_equal(distances, every[expected])


def test_alignment_rules_on_hand_cases():
    then = np.array([[1.0], [3.0]])  # mean 2, std 1
    now = np.array([[10.0], [14.0]])  # mean 12, std 2
    cont = np.array([[4.0], [0.0]])
    np.testing.assert_allclose(align(cont, then, now, "none"), cont)
    np.testing.assert_allclose(align(cont, then, now, "additive"), [[14.0], [10.0]])
    np.testing.assert_allclose(align(cont, then, now, "multiplicative"), [[24.0], [0.0]])
    np.testing.assert_allclose(align(cont, then, now, "last"), [[15.0], [11.0]])
    np.testing.assert_allclose(align(cont, then, now, "zscore"), [[16.0], [8.0]])


def _context(plain: np.ndarray, history: np.ndarray) -> RecallContext:
    return RecallContext(
        plain=plain,
        history=history,
        ref_mean=np.zeros(1),
        ref_scale=np.ones(1),
        lift=lambda w, m, s: ((w - m) / s).reshape(-1),
        readout=slice(history.shape[0] - 1, history.shape[0]),
        stabilize="clip",
    )


def test_residual_adds_weighted_errors_and_holds_the_last_beyond_memory():
    plain = np.zeros((4, 1))
    records = {
        "continuation": np.array([[[1.0], [2.0]], [[3.0], [4.0]]]),
        "forecast": np.zeros((2, 2, 1)),
        "ref_scale": np.ones((2, 1)),
    }
    mean, spread = Residual().correct(
        _context(plain, np.zeros((3, 1))), records, np.array([0.5, 0.5])
    )
    np.testing.assert_allclose(mean.ravel(), [2.0, 3.0, 3.0, 3.0])
    np.testing.assert_allclose(spread.ravel(), [1.0, 1.0, 1.0, 1.0])


def test_analog_replays_aligned_continuation():
    plain = np.zeros((2, 1))
    history_now = np.array([[10.0], [12.0]])
    records = {
        "continuation": np.array([[[3.0], [4.0]]]),
        "history": np.array([[[0.0], [2.0]]]),
    }
    mean, _ = Analog("additive").correct(_context(plain, history_now), records, np.array([1.0]))
    np.testing.assert_allclose(mean.ravel(), [13.0, 14.0])
    half, _ = Analog("additive", blend=0.5).correct(
        _context(plain, history_now), records, np.array([1.0])
    )
    np.testing.assert_allclose(half.ravel(), [6.5, 7.0])


def test_transfer_propagates_present_state_with_stored_operator():
    # The stored operator is a pure rotation by 0.3 rad on (cos, sin) delay pairs.
    lam = np.array([np.exp(0.3j), np.exp(-0.3j)])
    t = np.arange(2)
    modes = np.stack([np.exp(0.3j * t), np.exp(-0.3j * t)], axis=1)
    modes /= np.linalg.norm(modes, axis=0)
    history = np.cos(0.3 * np.array([[8.0], [9.0]]) + 0.2)
    records = {
        "succ_rank": np.array([2]),
        "succ_ref_mean": np.zeros((1, 1)),
        "succ_ref_scale": np.ones((1, 1)),
        "succ_modes": modes[None],
        "succ_eigenvalues": lam[None],
    }
    mean, spread = Transfer().correct(_context(np.zeros((3, 1)), history), records, np.array([1.0]))
    expected = np.cos(0.3 * np.arange(10, 13) + 0.2)
    np.testing.assert_allclose(mean.ravel(), expected, atol=1e-12)
    np.testing.assert_allclose(spread, 0.0, atol=1e-12)


def test_recurring_regime_recalls_an_episode_from_its_first_occurrence():
    # Regime A (period 20), then B (period 9, larger), then A again.
    a1 = sine_regime(600, 20.0, 1.0)
    b = sine_regime(600, 9.0, 2.0)
    a2 = sine_regime(150, 20.0, 1.0, start=37)
    rng = np.random.default_rng(0)
    y = np.concatenate([a1, b, a2]) + 0.01 * rng.standard_normal(1350)
    model = EpisodicKoopman(delays=16, window=128, episode_horizon=16)
    model.learn_many(y)
    forecast = model.predict(horizon=16)
    assert forecast.recalled, "memory should have matched something"
    best = forecast.recalled[0]
    assert best.origin < 600, f"best match at {best.origin} is not from the first A regime"
    # The episode at origin 600 has 15 of its 16 state steps in the first A regime.
    assert all(r.origin <= 600 for r in forecast.recalled[:3])


@pytest.mark.parametrize("state_delays,n_channels", [(2, 1), (8, 1), (32, 1), (5, 3)])
def test_keys_stay_within_their_bounds(state_delays, n_channels):
    from episodic_koopman.recall import episode_keys, key_bounds, normalized_states
    from episodic_koopman.spectrum import Signature

    rng = np.random.default_rng(state_delays)
    weights = KeyWeights(1.0, 0.5, 1.0)
    r_max, mode_length = 4, 3
    raw = rng.standard_normal((r_max, mode_length)) + 1j * rng.standard_normal((r_max, mode_length))
    modes = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    eigenvalues = np.exp(1j * rng.uniform(-np.pi, np.pi, r_max)) * rng.uniform(0, 1.25, r_max)
    signature = Signature(eigenvalues=eigenvalues, modes=modes, rank=r_max)
    # The extreme windows: one spike among constants maximises a z-score.
    windows = rng.standard_normal((200, state_delays, n_channels))
    windows[0] = 0.0
    windows[0, -1] = 1.0
    keys = episode_keys(signature, normalized_states(windows), weights)
    bounds = key_bounds(r_max, mode_length, state_delays, n_channels, weights)
    assert bounds.shape == (keys.shape[1],)
    assert np.all(np.abs(keys) <= bounds * (1 + 1e-6))
    assert np.max(np.abs(keys[0, 2 * r_max * (1 + mode_length) :])) > 0.99 * bounds[-1]


def test_adaptive_threshold_quantiles_are_those_of_the_window():
    """The window kept in order gives the quantiles a partition of the window gives (ties,
    huge values and NaN too), and a restored threshold continues the same."""
    from episodic_koopman.recall_threshold import AdaptiveThreshold, _quantile

    rng = np.random.default_rng(0)
    for q in (1.0, 0.5, 0.9):
        live = AdaptiveThreshold(q, window=50, min_history=10)
        recent: list[float] = []
        for i in range(300):
            odd = [0.5, 0.0, 1e300, np.nan][i % 4]
            value = odd if i % 7 == 0 else float(rng.random())
            live.observe(value)
            recent = [*recent, value][-50:]
            window = np.array(recent)
            median = _quantile(window, 0.5)
            cut = _quantile(window, q) if q < 1.0 and len(recent) >= 10 else np.inf
            np.testing.assert_equal([live.scale(), live._cut], [median, cut])
            if i % 60 == 0:
                restored = AdaptiveThreshold(q, window=50, min_history=10)
                restored.set_state(live.get_state())
                live = restored
