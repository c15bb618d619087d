"""Known answers and incremental-versus-batch agreement for the windowed DMD."""

import numpy as np
import pytest
from helpers import noisy_sines, two_sines

from episodic_koopman import EpisodicKoopman, ModelConfig
from episodic_koopman.koopman_fit import stabilize_eigenvalues
from episodic_koopman.lapack import complex_eig, symmetric_eigh
from episodic_koopman.operator import WindowedDMD, batch_dmd, detrended_batch_dmd

#: The operator's own forecast: no memory and no classical experts to mix it with.
PLAIN = ModelConfig(classical_experts="")


def hankel_rows(y: np.ndarray, d: int) -> np.ndarray:
    return np.stack([y[k : k + d] for k in range(len(y) - d + 1)])


# Two sinusoids have rank 4; standardising by the running mean (not exactly the
# signal's mean) adds a constant observable, eigenvalue 1, hence rank 5.
@pytest.mark.parametrize("rank", [5, "gd"])
def test_two_sinusoids_frequencies_and_long_forecast(rank):
    y = two_sines(400)
    model = EpisodicKoopman(delays=16, window=64, rank=rank, memory=None, config=PLAIN)
    model.learn_many(y[:300])
    spectrum = model.spectrum()
    positive = np.sort(spectrum.frequencies[spectrum.frequencies > 0])
    np.testing.assert_allclose(positive, [1 / 25.0, 1 / 7.3], atol=1e-6)
    forecast = np.array(model.forecast(horizon=50))
    truth = y[300:350]
    assert np.max(np.abs(forecast - truth)) / np.max(np.abs(truth)) < 1e-6


def test_linear_system_eigenvalues_recovered():
    # x_{k+1} = A x_k with eigenvalues 0.99 exp(+-0.4i) and 0.97, observed through their sum.
    rotation = 0.99 * np.array([[np.cos(0.4), -np.sin(0.4)], [np.sin(0.4), np.cos(0.4)]])
    A = np.zeros((3, 3))
    A[:2, :2] = rotation
    A[2, 2] = 0.97
    x = np.array([1.0, 0.0, 2.0])
    y = []
    for _ in range(70):
        y.append(x.sum())
        x = A @ x
    # Rank 3 + 1: standardisation adds a constant observable (eigenvalue 1).
    model = EpisodicKoopman(
        delays=6, window=40, rank=4, memory=None, config=ModelConfig(stabilize="none")
    )
    model.learn_many(np.array(y))
    eigs = model.spectrum().eigenvalues
    expected = np.array([0.99 * np.exp(0.4j), 0.99 * np.exp(-0.4j), 0.97, 1.0])
    np.testing.assert_allclose(np.sort_complex(eigs), np.sort_complex(expected), atol=1e-8)


def test_gram_updates_match_direct_products():
    rng = np.random.default_rng(1)
    snaps = rng.standard_normal((500, 6))
    dmd = WindowedDMD(n_features=6, window=50, rank=6)
    for k, s in enumerate(snaps):
        dmd.push(s)
        if k in (3, 49, 50, 51, 377, 499):
            window = snaps[max(0, k - 50) : k + 1]
            X, Y = window[:-1], window[1:]
            gram, cross = dmd.gram_matrices()
            np.testing.assert_allclose(gram, X.T @ X, rtol=1e-10, atol=1e-10)
            np.testing.assert_allclose(cross, Y.T @ X, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("rank", [6, 0.99, "gd"])
def test_incremental_forecasts_equal_batch_svd_fit(rank):
    y = noisy_sines(2000, seed=3)
    d, w = 16, 96
    dmd = WindowedDMD(n_features=d, window=w, rank=rank, max_rank=12)
    rows = hankel_rows(y, d)
    for k, psi in enumerate(rows):
        dmd.push(psi)
        if k >= w and k % 97 == 0:
            snaps = dmd.snapshots()
            reference = batch_dmd(snaps[:-1].T, snaps[1:].T, rank, max_rank=12)
            fit = dmd.fit()
            assert fit.rank == reference.rank
            ours = fit.propagate(psi, 30, slice(d - 1, d))
            theirs = reference.propagate(psi, 30, slice(d - 1, d))
            scale = np.max(np.abs(theirs))
            assert np.max(np.abs(ours - theirs)) / scale < 1e-6


def test_drift_stays_small_without_refits_and_vanishes_with_one():
    rng = np.random.default_rng(2)
    snaps = rng.standard_normal((20_000, 8)) * 100 + 50
    dmd = WindowedDMD(n_features=8, window=64, rank=8)
    for s in snaps:
        dmd.push(s)
    gram, _ = dmd.gram_matrices()
    window = snaps[-65:]
    exact = window[:-1].T @ window[:-1]
    drift = np.max(np.abs(gram - exact)) / np.max(np.abs(exact))
    assert drift < 1e-9
    dmd.refit()
    gram, _ = dmd.gram_matrices()
    assert np.max(np.abs(gram - exact)) / np.max(np.abs(exact)) < 1e-14


def test_model_forecast_equals_batch_svd_dmd_of_the_window_in_force():
    """At a scored tick (3000 here), the plain forecast is an SVD fit of the current window;
    at the 7 ticks after it, an SVD fit of that tick's window propagated from the current
    delay state (`reference_forecast` gives both)."""
    y = noisy_sines(3008, seed=4)
    model = EpisodicKoopman(
        delays=32,
        window=256,
        memory=None,
        config=ModelConfig(refit_every=10**9, classical_experts=""),
    )
    model.learn_many(y[:3000])
    assert model._pipeline.in_force.recall_tick == 3000
    snaps = model._pipeline.dyn.dmd.snapshots()  # the current window: the fit's at 3000
    for k in range(8):
        if k:
            model.learn_one(float(y[2999 + k]))
        ours = np.array(model.forecast(horizon=48))
        theirs = model.reference_forecast(48)[:, 0]
        assert np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)) < 1e-6
        # The reference itself: that window, refitted by SVD, from the current state.
        pipeline = model._pipeline
        fit = batch_dmd(snaps[:-1].T, snaps[1:].T, "gd", 16)
        path = fit.propagate(pipeline.dyn.dmd.newest(), 48, pipeline.obs.embedding.readout)
        np.testing.assert_allclose(pipeline.obs.to_raw(path)[:, 0], theirs, rtol=0, atol=1e-9)


def test_stabilisation_pulls_unstable_eigenvalues_to_the_unit_circle():
    lam = np.array([1.2 + 0.0j, 0.5 + 0.5j, 1.1j])
    out = stabilize_eigenvalues(lam, "clip")
    np.testing.assert_allclose(np.abs(out), [1.0, abs(0.5 + 0.5j), 1.0])
    np.testing.assert_allclose(np.angle(out), np.angle(lam))
    assert stabilize_eigenvalues(lam, "none") is lam


def test_growing_series_forecast_is_bounded_when_stabilised():
    t = np.arange(300)
    y = np.exp(0.01 * t) * np.sin(0.3 * t)
    # No envelope (`episodic_koopman.envelope`): this is what the operator alone does.
    clipped = EpisodicKoopman(
        delays=10, window=80, memory=None, config=ModelConfig(classical_experts="", envelope=None)
    )
    free = EpisodicKoopman(
        delays=10,
        window=80,
        memory=None,
        config=ModelConfig(stabilize="none", classical_experts="", envelope=None),
    )
    clipped.learn_many(y)
    free.learn_many(y)
    far_clipped = np.abs(clipped.forecast(horizon=2000)[-200:]).max()
    far_free = np.abs(free.forecast(horizon=2000)[-200:]).max()
    assert far_clipped < 3 * np.abs(y).max()
    assert far_free > 100 * np.abs(y).max()


def test_linear_trend_uses_stable_non_modal_path():
    # A ramp makes a Jordan block at 1: eigenvectors are (near) defective.
    y = 0.5 * np.arange(200.0) + 3.0
    model = EpisodicKoopman(delays=4, window=40, memory=None, rank=2, config=PLAIN)
    model.learn_many(y)
    forecast = np.array(model.forecast(horizon=20))
    np.testing.assert_allclose(forecast, 0.5 * np.arange(200, 220) + 3.0, rtol=1e-5)


def test_near_defective_fit_has_amplitudes_of_the_size_of_the_state():
    # On a ramp the exact amplitudes are about +-1e6 and cancel; the signature orders
    # modes by amplitude, so they must say how strong each mode is instead.
    y = 0.5 * np.arange(200.0) + 3.0
    y = (y - y.mean()) / y.std()
    X = hankel_rows(y, 4).T
    fit = batch_dmd(X[:, :-1], X[:, 1:], 2)
    psi = X[:, -1]
    assert fit.modal_condition > 1e4
    b = fit.amplitudes(psi)
    assert np.all(np.isfinite(b))
    assert np.abs(b).max() < 2 * np.linalg.norm(psi)
    assert np.linalg.norm(fit.modes @ b - psi) < 0.05 * np.linalg.norm(psi)


def test_well_conditioned_fit_amplitudes_are_the_exact_ones():
    y = two_sines(300)
    X = hankel_rows(y, 12).T
    fit = batch_dmd(X[:, :-1], X[:, 1:], 4)
    psi = X[:, -1]
    assert fit.modal_condition < 1e4
    b = fit.amplitudes(psi)
    np.testing.assert_array_equal(b, fit.inverse_eigenvectors @ (fit.basis.T @ psi))
    np.testing.assert_allclose(fit.modes @ b, psi, atol=1e-8 * np.linalg.norm(psi))


def test_direct_lapack_calls_return_numpys_floats():
    # The fit calls LAPACK's gufuncs without NumPy's wrappers: the same floats, and
    # the same complex layout the fit always stored (imaginary parts +0.0 when real).
    rng = np.random.default_rng(7)
    symmetric = rng.standard_normal((12, 30))
    symmetric = np.asfortranarray(symmetric @ symmetric.T)
    for ours, theirs in zip(symmetric_eigh(symmetric), np.linalg.eigh(symmetric), strict=True):
        assert ours.tobytes() == theirs.tobytes()
    rotation = np.array([[0.0, -1.0], [1.0, 0.0]])
    for a in (rng.standard_normal((9, 9)), np.diag([3.0, -1.0, 0.5]), rotation):
        w, v = complex_eig(a)
        ref_w, ref_v = np.linalg.eig(a)
        assert w.dtype == v.dtype == np.complex128
        # Bytes, not ==: a -0.0 for +0.0 would be a different float.
        assert w.tobytes() == ref_w.astype(np.complex128).tobytes()
        assert v.tobytes() == ref_v.astype(np.complex128).tobytes()
    with pytest.raises(np.linalg.LinAlgError):
        complex_eig(np.array([[np.nan, 0.0], [0.0, 1.0]]))


def test_detrended_gram_matrices_are_those_of_the_window_less_its_lines():
    """The rank-4 corrections of `WindowedDMD._detrended` equal the Gram matrices of the
    snapshots less each observable's least-squares line, growing and full windows."""
    t = np.arange(400.0)
    y = 0.03 * t + np.sin(2 * np.pi * t / 12) + 0.1 * np.random.default_rng(2).normal(size=400)
    dmd = WindowedDMD(n_features=10, window=80, detrend=True)
    for k in range(300):
        dmd.push(y[k : k + 10])
        if k in (5, 60, 299):
            snaps = dmd.snapshots()
            c = np.arange(snaps.shape[0]) - 0.5 * (snaps.shape[0] - 1)
            beta = c @ snaps / (c @ c)
            deviations = snaps - (snaps.mean(axis=0) + c[:, None] * beta)
            gram, cross, (trend, index) = dmd._detrended()
            X, Y = deviations[:-1], deviations[1:]
            np.testing.assert_allclose(np.tril(gram), np.tril(X.T @ X), atol=1e-9)
            np.testing.assert_allclose(cross, Y.T @ X, atol=1e-9)
            np.testing.assert_allclose(trend[0], snaps[-1] - deviations[-1], atol=1e-12)
            assert index == k


def test_detrended_fit_forecasts_a_ramp_exactly_from_any_later_state():
    """A linear trend is all line: the deviations vanish and the forecast is the line's
    continuation, also from a state pushed after the fit (the index places it)."""
    y = 5.0 - 0.25 * np.arange(300.0)
    dmd = WindowedDMD(n_features=6, window=64, rank=4, detrend=True)
    for k in range(200):
        dmd.push(y[k : k + 6])
    fit = dmd.fit()
    assert fit is not None and fit.trend is not None
    for k in range(200, 203):
        dmd.push(y[k : k + 6])
    path = fit.propagate(dmd.newest(), 10, slice(5, 6), "clip", dmd.n_pushed - 1)[:, 0]
    np.testing.assert_allclose(path, y[208:218], rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="known index"):
        fit.propagate(dmd.newest(), 10, slice(5, 6))


def test_detrended_fit_carries_a_trend_the_window_shows_through_a_flat_stretch():
    """A season on a rising line whose newest stretch is flat: the plain fit carries the
    flat level on, the detrended one the window's slope (the airline's 1958 to 1959)."""
    t = np.arange(240.0)
    season = np.sin(2 * np.pi * t / 12)
    level = np.where(t < 216, 0.05 * t, 0.05 * 216)  # flat over the last two seasons
    y = level + season
    plain = WindowedDMD(n_features=13, window=200)
    detrended = WindowedDMD(n_features=13, window=200, detrend=True)
    for k in range(228):
        plain.push(y[k : k + 13])
        detrended.push(y[k : k + 13])
    rows = slice(12, 13)
    flat = plain.fit().propagate(plain.newest(), 12, rows)[:, 0]
    fit = detrended.fit()
    rising = fit.propagate(detrended.newest(), 12, rows, "clip", detrended.n_pushed - 1)[:, 0]
    # The detrended forecast's mean change over the season is the window's slope.
    assert abs((rising.mean() - flat.mean()) / 6.5 - fit.trend[1][12]) < 0.05
    assert fit.trend[1][12] > 0.03


def test_incremental_detrended_forecasts_equal_the_batch_reference():
    y = noisy_sines(700, seed=3) + 0.01 * np.arange(700)
    dmd = WindowedDMD(n_features=16, window=128, rank="gd", max_rank=16, detrend=True)
    for k in range(600):
        dmd.push(y[k : k + 16])
    ours = dmd.fit()
    theirs = detrended_batch_dmd(dmd.snapshots(), "gd", 16, dmd.n_pushed - 1)
    assert ours.rank == theirs.rank
    index = dmd.n_pushed - 1
    a = ours.propagate(dmd.newest(), 24, slice(15, 16), "clip", index)
    b = theirs.propagate(dmd.newest(), 24, slice(15, 16), "clip", index)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-8 * np.abs(b).max())


def test_model_with_detrend_forecasts_equal_its_reference_and_survive_save_load(tmp_path):
    y = noisy_sines(1200, seed=5) + 0.002 * np.arange(1200)
    model = EpisodicKoopman(delays=16, window=128, config=ModelConfig(detrend=True))
    model.learn_many(y[:1003])
    ours = np.array(model.forecast(horizon=24))
    plain = model._pipeline.issuer.combine(24, None)[2][0]  # the plain expert's track
    np.testing.assert_allclose(plain[:, 0], model.reference_forecast(24)[:, 0], atol=1e-6)
    model.save(tmp_path / "m.ekm")
    loaded = EpisodicKoopman.load(tmp_path / "m.ekm")
    assert loaded.config.detrend
    for m in (model, loaded):
        m.learn_many(y[1003:1100])
    np.testing.assert_array_equal(model.forecast(horizon=24), loaded.forecast(horizon=24))
    assert not np.array_equal(ours, np.array(model.forecast(horizon=24)))
