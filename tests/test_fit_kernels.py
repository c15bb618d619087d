"""The fit's compiled loops give the very floats of the NumPy expressions they replace."""

import numpy as np
import pytest

from episodic_koopman import spectrum
from episodic_koopman.eigenvalue_powers import stabilize_eigenvalues
from episodic_koopman.koopman_fit import KoopmanFit, propagate_many, reduced_fit
from episodic_koopman.lapack import complex_eig, symmetric_eigh
from episodic_koopman.operator import WindowedDMD, detrended_batch_dmd
from episodic_koopman.rank import numerical_rank, select_rank


def _random_eigenvalues(rng: np.random.Generator, r: int) -> np.ndarray:
    """Conjugate pairs and real ones, some outside the unit circle, one exactly zero."""
    pairs = rng.uniform(0.3, 1.4, r // 2) * np.exp(1j * rng.uniform(0.05, 3.1, r // 2))
    reals = rng.uniform(-1.3, 1.3, r - 2 * (r // 2)).astype(np.complex128)
    lam = np.concatenate([pairs, pairs.conj(), reals])
    if r > 2:
        lam[-1] = 0.0
    return lam


@pytest.mark.parametrize("stabilize", ["clip", "none"])
def test_eigenvalue_powers_equal_numpys_power(stabilize):
    rng = np.random.default_rng(0)
    for r in range(1, 17):
        lam = _random_eigenvalues(rng, r)
        eye = np.eye(r, dtype=np.complex128)
        fit = KoopmanFit(np.eye(r), np.ones(r), np.eye(r), lam, eye, eye, n_pairs=0)
        for steps in (1, 2, 3, 4, 24, 99, 100, 130):
            want = (
                stabilize_eigenvalues(lam, stabilize)[None, :] ** np.arange(1, steps + 1)[:, None]
            )
            got = fit._powers(steps, stabilize)
            assert got.dtype == want.dtype and got.shape == want.shape
            assert got.tobytes() == want.tobytes()


def test_modal_condition_equals_the_product_of_one_norms():
    rng = np.random.default_rng(1)
    for r in range(1, 17):
        a = rng.standard_normal((r, r)) * np.exp(rng.uniform(-20, 20, (r, r)))
        fit = reduced_fit(np.eye(r), np.ones(r), a, 0)
        want = np.linalg.norm(fit.eigenvectors, 1) * np.linalg.norm(fit.inverse_eigenvectors, 1)
        assert fit.modal_condition == float(want)


def test_windowed_fit_equals_its_numpy_expressions():
    rng = np.random.default_rng(2)
    t = np.arange(400)
    series = np.sin(0.3 * t) + 0.5 * np.sin(0.05 * t) + 0.1 * rng.standard_normal(t.size)
    dmd = WindowedDMD(n_features=12, window=120, rank="gd", max_rank=8)
    for k in range(series.size - 12):
        dmd.push(series[k : k + 12])
    fit = dmd.fit()
    gram, cross = dmd.gram_matrices()
    lam, vectors = symmetric_eigh(gram)
    lam, vectors = lam[::-1], vectors[:, ::-1]
    sigma = np.sqrt(np.maximum(lam, 0.0))
    r = fit.rank
    basis = np.ascontiguousarray(vectors[:, :r])
    reduced = (basis.T @ cross @ basis) / lam[:r]
    assert fit.sigma.tobytes() == sigma[:r].tobytes()
    assert fit.basis.tobytes() == basis.tobytes() and fit.basis.flags.c_contiguous
    assert fit.reduced.tobytes() == reduced.tobytes() and fit.reduced.flags.c_contiguous


def test_rank_counts_equal_numpys():
    rng = np.random.default_rng(3)
    for _ in range(200):
        sigma = np.sort(np.exp(rng.uniform(-30, 3, rng.integers(1, 40))))[::-1]
        rtol = float(np.exp(rng.uniform(-20, -1)))
        assert numerical_rank(sigma, rtol) == np.count_nonzero(sigma > rtol * sigma[0])
        assert 1 <= select_rank(sigma, 32, 256, "gd", 16, rtol) <= 16


def _reference_groups(eigenvalues: np.ndarray) -> list[tuple[tuple[int, ...], float]]:
    """The grouping `canonical_order` is specified by, in plain Python."""
    lams = eigenvalues.tolist()
    is_real = [abs(z.imag) <= 1e-9 * max(abs(z), 1e-300) for z in lams]
    unmatched = [j for j, z in enumerate(lams) if not is_real[j] and z.imag <= 0]
    groups: list[tuple[tuple[int, ...], float]] = []
    for i, z in enumerate(lams):
        if is_real[i]:
            groups.append(((i,), 0.0))
        elif z.imag > 0:
            if unmatched:
                j = min(unmatched, key=lambda k: abs(lams[k] - z.conjugate()))
                unmatched.remove(j)
                groups.append(((i, j), -z.imag))
            else:
                groups.append(((i,), -z.imag))
    groups.extend(((j,), lams[j].imag) for j in unmatched)
    return groups


def test_conjugate_groups_equal_the_plain_python_grouping():
    rng = np.random.default_rng(4)
    for trial in range(400):
        k = int(rng.integers(0, 7))
        pairs = rng.standard_normal(k) + 1j * rng.standard_normal(k)
        partners = pairs.conj()
        if trial % 3 == 1:  # not exact conjugates: the nearest is taken
            partners = partners + 1e-13 * rng.standard_normal(k)
        extra = rng.standard_normal(int(rng.integers(0, 4))) * (1 + 1j * (trial % 2))
        lam = np.concatenate([pairs, partners, extra, [1e-12j, 0j]][: 3 + trial % 2])
        rng.shuffle(lam)
        spectrum._last_spectrum = None
        assert list(spectrum._conjugate_groups(lam)) == _reference_groups(lam)


def test_complex_eig_of_real_spectra_is_complex_with_zero_imaginary_parts():
    w, v = complex_eig(np.diag([2.0, -1.0, 0.5]))
    assert w.dtype == v.dtype == np.complex128
    assert not np.signbit(w.imag).any() and not np.signbit(v.imag).any()
    with pytest.raises(np.linalg.LinAlgError):
        complex_eig(np.array([[1.0, np.nan], [0.0, 1.0]]))


def test_a_detrended_forecast_is_one_row_of_the_batched_one():
    rng = np.random.default_rng(5)
    t = np.arange(300.0)
    series = 0.02 * t + np.sin(0.4 * t) + 0.05 * rng.standard_normal(t.size)
    snapshots = np.stack([series[k : k + 8] for k in range(150)])
    fit: KoopmanFit = detrended_batch_dmd(snapshots, "gd", 6, index=149)
    psis = np.stack([series[k : k + 8] for k in range(140, 150)])
    indices = np.arange(140, 150)
    batch = propagate_many(fit, psis, 12, slice(7, 8), indices=indices)
    for b, (psi, index) in enumerate(zip(psis, indices, strict=True)):
        one = fit.propagate(psi, 12, slice(7, 8), index=int(index))
        level, slope = fit.trend
        deviation = psi - (level + (index - fit.trend_index) * slope)
        ahead = np.arange(index - fit.trend_index + 1, index - fit.trend_index + 13.0)[:, None]
        want = fit._propagate(deviation, 12, slice(7, 8), "clip") + (
            level[7:8] + ahead * slope[7:8]
        )
        assert one.tobytes() == want.tobytes()
        np.testing.assert_allclose(batch[b], one, rtol=1e-12, atol=1e-12)
