import itertools

import numpy as np
import pytest

from episodic_koopman.spectrum import (
    Spectrum,
    canonical_order,
    eigenvalue_wasserstein,
    make_signature,
    normalize_modes,
)


def brute_force_w2(a: np.ndarray, b: np.ndarray) -> float:
    return min(
        np.sqrt(np.mean(np.abs(a - b[list(p)]) ** 2)) for p in itertools.permutations(range(len(b)))
    )


@pytest.mark.parametrize("seed", range(5))
def test_wasserstein_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(6) + 1j * rng.standard_normal(6)
    b = rng.standard_normal(6) + 1j * rng.standard_normal(6)
    w2, perm = eigenvalue_wasserstein(a, b)
    assert w2 == pytest.approx(brute_force_w2(a, b), rel=1e-12)
    assert sorted(perm) == list(range(6))


def test_wasserstein_is_a_metric_on_examples():
    rng = np.random.default_rng(7)
    sets = [rng.standard_normal(5) + 1j * rng.standard_normal(5) for _ in range(3)]
    d = lambda x, y: eigenvalue_wasserstein(x, y)[0]  # noqa: E731
    a, b, c = sets
    assert d(a, a) == pytest.approx(0.0, abs=1e-15)
    assert d(a, b) == pytest.approx(d(b, a))
    assert d(a, c) <= d(a, b) + d(b, c) + 1e-12


def test_canonical_order_sorts_by_amplitude_with_pairs_adjacent():
    lam = np.array([0.5 + 0j, 0.9 + 0.3j, 0.9 - 0.3j, 0.7 + 0.6j, 0.7 - 0.6j])
    amp = np.array([0.1, 2.0, 2.0, 5.0, 5.0])
    order = canonical_order(lam, amp)
    assert order.tolist() == [3, 4, 1, 2, 0]


def test_canonical_order_is_invariant_to_input_permutation():
    lam = np.array([0.5 + 0j, 0.9 + 0.3j, 0.9 - 0.3j, 0.7 + 0.6j, 0.7 - 0.6j])
    amp = np.array([0.1, 2.0, 2.0, 5.0, 5.0])
    shuffle = np.array([4, 0, 2, 3, 1])
    first = lam[canonical_order(lam, amp)]
    second = lam[shuffle][canonical_order(lam[shuffle], amp[shuffle])]
    np.testing.assert_array_equal(first, second)


def test_mode_normalisation_removes_scale_and_phase():
    rng = np.random.default_rng(3)
    modes = rng.standard_normal((6, 3)) + 1j * rng.standard_normal((6, 3))
    factors = np.array([2.5 * np.exp(1.1j), 0.3 * np.exp(-2.0j), 7.0])
    a = normalize_modes(modes, slice(4, 6))
    b = normalize_modes(modes * factors, slice(4, 6))
    np.testing.assert_allclose(a, b, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(a, axis=0), 1.0)


def test_signature_is_padded_and_canonical():
    lam = np.array([0.9 + 0.3j, 0.9 - 0.3j, 0.5 + 0j])
    amp = np.array([1.0, 1.0, 3.0])
    modes = np.eye(4, 3, dtype=complex) + 0.1
    sig = make_signature(lam, amp, modes, slice(0, 4), slice(3, 4), r_max=5)
    assert sig.rank == 3
    np.testing.assert_array_equal(sig.eigenvalues[:3], [0.5, 0.9 + 0.3j, 0.9 - 0.3j])
    np.testing.assert_array_equal(sig.eigenvalues[3:], 0)
    assert sig.modes.shape == (5, 4)
    np.testing.assert_array_equal(sig.modes[3:], 0)


def test_spectrum_reports_periods_and_growth():
    lam = np.array([np.exp(-0.01 + 2j * np.pi / 24), np.exp(-0.01 - 2j * np.pi / 24), 1.0 + 0j])
    spec = Spectrum(eigenvalues=lam, amplitudes=np.array([1, 1, 2.0]), modes=np.eye(3), dt=1.0)
    rows = spec.summary()
    assert len(rows) == 2  # the conjugate is folded into its pair
    periodic = next(r for r in rows if r["period"] is not None)
    assert periodic["period"] == pytest.approx(24.0)
    assert periodic["growth_rate"] == pytest.approx(-0.01)


def test_canonical_order_pairs_each_eigenvalue_with_its_nearest_conjugate():
    # Exact conjugates (as LAPACK gives them) pair without a distance scan; inexact
    # ones, repeated pairs and unpaired ones still pair with the nearest, first found.
    rng = np.random.default_rng(11)
    pair = [0.9 + 0.2j, 0.9 - 0.2j]
    cases = [
        np.array([*pair, 0.5 + 0j, *pair]),  # a repeated pair
        np.array([0.3 + 0.4j, 0.5 + 0j, 0.3 - 0.4000001j]),  # not an exact conjugate
        np.array([0.7 + 0.1j, 0.2 - 0.3j, 0.7 - 0.1j, 0.2 + 0.3j]),  # conjugates not adjacent
        np.array([0.1 - 0.5j, 0.6 + 0j]),  # an unpaired one
    ]
    for lams in cases:
        amplitudes = rng.uniform(0.5, 2.0, lams.size)
        order = canonical_order(lams, amplitudes)
        assert sorted(order.tolist()) == list(range(lams.size))
        for k, i in enumerate(order[:-1]):
            if lams[i].imag > 1e-9:  # a positive frequency leads its pair
                partner = lams[order[k + 1]]
                others = [lams[j] for j in range(lams.size) if lams[j].imag < 0]
                assert abs(partner - lams[i].conjugate()) == min(
                    abs(z - lams[i].conjugate()) for z in others
                )
