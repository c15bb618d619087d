"""The local linear operator: sliding-window DMD, updated in O(m^2) per snapshot.

For snapshot pairs ``X = [x_1 .. x_w]``, ``Y = [x_2 .. x_{w+1}]`` (``m``
observables each), truncated DMD takes the SVD ``X = U S V^T`` and the reduced
operator ``A_r = U_r^T Y V_r S_r^{-1}``. Substituting ``V_r = X^T U_r S_r^{-1}``
gives the identity this module is built on::

    A_r = U_r^T (Y X^T) U_r S_r^{-2},    U_r, S_r^2 from eigh(X X^T).

So the fit needs only the two ``m x m`` Gram matrices ``G = X X^T`` and
``C = Y X^T``. Sliding the window by one snapshot adds one pair and drops the
oldest: two rank-1 updates of each (BLAS ``dger``, about ``8 m^2`` flops), never
an SVD of the ``m x w`` window. This is the windowed online DMD of Zhang et al.
(2019) with the inverse Gram replaced by the Gram itself, which stays well
defined when the data are rank-deficient (a noiseless sum of sinusoids). The
eigendecomposition is taken only when a forecast or an episode asks for it
(`WindowedDMD.fit`, cached until the next update), and `WindowedDMD.refit`
recomputes the Gram matrices exactly to bound rounding drift. The fit itself, and
how it forecasts, is `episodic_koopman.koopman_fit`.

>>> import numpy as np
>>> t = np.arange(200)
>>> y = np.sin(0.2 * t)
>>> X = np.stack([y[k : k + 8] for k in range(150)])
>>> dmd = WindowedDMD(n_features=8, window=100, rank=2)
>>> for x in X:
...     dmd.push(x)
>>> fit = dmd.fit()
>>> np.round(np.sort(np.abs(np.angle(fit.eigenvalues))), 6)
array([0.2, 0.2])
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.linalg.blas import dger

from .jit import kernel
from .koopman_fit import KoopmanFit, reduced_fit
from .lapack import symmetric_eigh
from .rank import RankRule, drift_rtol, select_rank, validate_rank_rule

# `dger(alpha, x, y, incx, incy, a, overwrite_x, overwrite_y, overwrite_a)` is called with
# positional arguments: f2py's keyword parsing cost as much as the update itself. With
# ``overwrite_a`` set and a Fortran-ordered ``a``, the update lands in ``a`` in place.


def detrended_batch_dmd(
    snapshots: np.ndarray, rank: RankRule, max_rank: int | None, index: int
) -> KoopmanFit:
    """`batch_dmd` of ``snapshots`` (``(w + 1, m)``, the newest of index ``index``) less
    each observable's least-squares line: the reference of `WindowedDMD` with ``detrend``."""
    w = snapshots.shape[0] - 1
    c = np.arange(w + 1, dtype=np.float64) - 0.5 * w
    mu = snapshots.mean(axis=0)
    beta = (c @ snapshots) / (c @ c)
    deviations = snapshots - (mu + c[:, None] * beta)
    fit = batch_dmd(deviations[:-1].T, deviations[1:].T, rank, max_rank)
    trend = np.stack([mu + c[-1] * beta, beta])
    return reduced_fit(fit.basis, fit.sigma, fit.reduced, fit.n_pairs, trend, index)


def batch_dmd(
    X: np.ndarray, Y: np.ndarray, rank: RankRule, max_rank: int | None = None
) -> KoopmanFit:
    """Reference truncated DMD by SVD of the snapshot matrix ``X`` (``m x w``).

    This is what `WindowedDMD` avoids on every step; tests and benchmarks use it
    as the exact baseline.
    """
    U, s, Vt = np.linalg.svd(X, full_matrices=False)
    r = select_rank(s, X.shape[0], X.shape[1], rank, max_rank)
    basis = U[:, :r]
    reduced = (basis.T @ Y @ Vt[:r].T) / s[:r]
    return reduced_fit(basis, s[:r], reduced, X.shape[1])


@kernel
def _singular_values(ascending: np.ndarray) -> np.ndarray:
    """``np.sqrt(np.maximum(ascending[::-1], 0.0))``: the Gram's eigenvalues (``eigh``'s
    ascending order) as singular values, largest first, in one pass. (A zero's sign may
    differ from NumPy's; no sign of zero reaches a fit, whose rank keeps none.)"""
    n = ascending.shape[0]
    sigma = np.empty(n)
    for i in range(n):
        value = ascending[n - 1 - i]
        sigma[i] = np.sqrt(value) if value > 0.0 else (value if value != value else 0.0)
    return sigma


@kernel
def _leading_basis(vectors: np.ndarray, r: int) -> np.ndarray:
    """``np.ascontiguousarray(vectors[:, ::-1][:, :r])``: the eigenvectors of the ``r``
    largest eigenvalues (last in ``eigh``'s order), largest first, as a new C array."""
    m, n = vectors.shape
    basis = np.empty((m, r))
    for i in range(m):
        for j in range(r):
            basis[i, j] = vectors[i, n - 1 - j]
    return basis


@kernel
def _divide_columns(a: np.ndarray, ascending: np.ndarray) -> None:
    """``a /= ascending[::-1][: a.shape[1]]`` in place: column ``j`` by the ``j``-th largest."""
    n = ascending.shape[0]
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            a[i, j] = a[i, j] / ascending[n - 1 - j]


@lru_cache(maxsize=8)
def _detrend_weights(w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The weights of `WindowedDMD._detrended`'s sums over ``w + 1`` snapshots (rows: ``K``,
    ``L``; ``R``, ``L'``; ``L``, ``K``; the line at the newest snapshot and its slope) and the
    middle matrices of its two rank-4 terms. Read-only: shared by every window of size ``w``."""
    c = np.arange(w + 1, dtype=np.float64) - 0.5 * w
    ones = np.ones(w + 1)
    x_only, y_only = ones.copy(), ones.copy()
    x_only[-1] = 0.0  # x_k = s_k, k < w
    y_only[0] = 0.0  # y_k = s_{k+1}
    mu, beta = ones / (w + 1), c / float(c @ c)
    k0, k1 = x_only, c * x_only
    r0, r1 = y_only, (c - 1.0) * y_only
    rows = [k0, k1, mu, beta, r0, r1, mu + beta, beta, mu, beta, k0, k1, mu + c[-1] * beta, beta]
    weights = np.stack(rows)
    a = c[:-1]
    h = np.array([[float(w), a.sum()], [a.sum(), float(a @ a)]])
    eye, zero = np.eye(2), np.zeros((2, 2))
    g_middle = np.block([[zero, -eye], [-eye, h]])
    c_middle = np.block([[-eye, zero], [h, -eye]])
    for array in (weights, g_middle, c_middle):
        array.flags.writeable = False
    return weights, g_middle, c_middle


class WindowedDMD:
    """DMD on the last ``window`` snapshot pairs, maintained by rank-1 Gram updates.

    Snapshots are pushed one at a time; consecutive snapshots form the pairs
    ``(x_k, x_{k+1})``. Until ``window`` pairs have arrived the window grows;
    after that each push adds the newest pair and removes the oldest.
    ``refit_every`` (pushes between exact `refit` calls, if scheduled) bounds the
    rounding drift of the Gram matrices, and with it the numerical rank floor;
    without it the drift is bounded by every push so far.
    """

    def __init__(
        self,
        n_features: int,
        window: int,
        rank: RankRule = "gd",
        max_rank: int | None = None,
        refit_every: int | None = None,
        detrend: bool = False,
    ) -> None:
        validate_rank_rule(rank)
        self.detrend = detrend
        self.n_features = n_features
        self.window = window
        self.rank = rank
        self.max_rank = max_rank
        self.refit_every = refit_every
        self._ring = np.zeros((window + 1, n_features))
        self._count = 0
        self._gram = np.zeros((n_features, n_features), order="F")
        self._cross = np.zeros((n_features, n_features), order="F")
        self._fit: KoopmanFit | None = None

    @property
    def n_snapshots(self) -> int:
        return min(self._count, self.window + 1)

    @property
    def n_pairs(self) -> int:
        return max(self.n_snapshots - 1, 0)

    @property
    def n_pushed(self) -> int:
        return self._count

    def _slot(self, k: int) -> int:
        return k % (self.window + 1)

    def newest(self) -> np.ndarray:
        """The most recent snapshot (the state forecasts start from)."""
        return self._ring[self._slot(self._count - 1)]

    def snapshots(self) -> np.ndarray:
        """The window's snapshots, oldest first: ``(n_snapshots, m)``."""
        first = self._count - self.n_snapshots
        return self._ring[np.arange(first, self._count) % (self.window + 1)]

    def push(self, psi: np.ndarray) -> None:
        """Add one snapshot (and the pair it closes), sliding the window if full."""
        self.push_standardized(psi, 0.0, 1.0)  # (x - 0) / 1 is x, bit for bit

    def push_standardized(
        self, rows: np.ndarray, mean: np.ndarray | float, scale: np.ndarray | float
    ) -> None:
        """`push` of the snapshot ``((rows - mean) / scale).reshape(-1)`` (a delay window
        ``(d, c)`` standardised), written straight into its ring slot: the same floats and
        the same updates in the same order, without the temporaries (every step runs this).
        """
        count, size = self._count, self.window + 1
        slot = self._ring[count % size]  # the oldest snapshot's slot, when the window is full
        if count > self.window:
            # Drop the oldest pair before its slot is overwritten.
            y_old = self._ring[(count - self.window) % size]
            dger(-1.0, slot, slot, 1, 1, self._gram, 1, 1, 1)
            dger(-1.0, y_old, slot, 1, 1, self._cross, 1, 1, 1)
        block = slot.reshape(rows.shape)
        np.subtract(rows, mean, out=block)
        np.divide(block, scale, out=block)
        if count > 0:
            x_new = self._ring[(count - 1) % size]
            dger(1.0, x_new, x_new, 1, 1, self._gram, 1, 1, 1)
            dger(1.0, slot, x_new, 1, 1, self._cross, 1, 1, 1)
        self._count = count + 1
        self._fit = None

    def refit(self) -> None:
        """Recompute the Gram matrices exactly from the window (bounds rounding drift)."""
        snaps = self.snapshots()
        X, Y = snaps[:-1], snaps[1:]
        self._gram = np.asfortranarray(X.T @ X)
        self._cross = np.asfortranarray(Y.T @ X)
        self._fit = None

    def replace_snapshots(self, snapshots: np.ndarray) -> None:
        """Swap the window's snapshots for re-standardised ones and refit exactly."""
        first = self._count - self.n_snapshots
        if snapshots.shape[0] != self._count - first:
            raise ValueError(f"expected {self._count - first} snapshots, got {snapshots.shape[0]}")
        self._ring[np.arange(first, self._count) % (self.window + 1)] = snapshots  # one copy
        self.refit()

    def use_detrend(self, detrend: bool) -> None:
        """Take the next fits of the window detrended or not (the trend gate's decision)."""
        if detrend != self.detrend:
            self.detrend, self._fit = detrend, None

    def fit(self) -> KoopmanFit | None:
        """The truncated DMD of the current window (``None`` before two pairs)."""
        if self._fit is not None:
            return self._fit
        if self.n_pairs < 2:
            return None
        gram, cross = self._gram, self._cross
        trend: tuple[np.ndarray, int] | tuple[()] = ()
        if self.detrend:
            gram, cross, trend = self._detrended()
        lam, vectors = symmetric_eigh(gram)  # ascending
        sigma = _singular_values(lam)
        # Two rank-1 updates of G per push since the last exact refit, at most.
        pushes = self.refit_every if self.refit_every is not None else self._count
        n_pairs = self.n_pairs
        rtol = drift_rtol(2 * pushes, n_pairs)
        r = select_rank(sigma, self.n_features, n_pairs, self.rank, self.max_rank, rtol)
        basis = _leading_basis(vectors, r)
        reduced = basis.T @ cross @ basis
        _divide_columns(reduced, lam)
        self._fit = reduced_fit(basis, sigma[:r], reduced, n_pairs, *trend)
        return self._fit

    def _detrended(self) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, int]]:
        """The Gram matrices of the window less each observable's least-squares line
        over its snapshots, and that line (`KoopmanFit.trend`) with its snapshot index.

        With ``x_k = s_k``, ``y_k = s_{k+1}`` (``k < w``) and the line ``mu + beta c_k``
        (``c`` the centred snapshot index), ``L = [mu, beta]``, ``L' = [mu + beta, beta]``
        (the line one step on), ``K = [sum x_k, sum c_k x_k]``, ``R = [sum y_k, sum c_k
        y_k]`` and ``H`` the ``2 x 2`` moments of ``(1, c_k)``::

            G_d = G - K L^T - L K^T + L H L^T,    C_d = C - R L^T - L' K^T + L' H L^T.

        Every one of those vectors is a weighted sum of the snapshots: one ``14 x (w+1)``
        product with the window, then two rank-4 terms (no product of the window with
        itself, and few NumPy calls: they, not the flops, are the cost at this size).
        """
        snaps = self.snapshots()
        weights, g_middle, c_middle = _detrend_weights(snaps.shape[0] - 1)
        sums = weights @ snaps
        gram = self._gram + sums[0:4].T @ (g_middle @ sums[0:4])
        cross = self._cross + sums[4:8].T @ (c_middle @ sums[8:12])
        return gram, cross, (sums[12:14], self._count - 1)

    def gram_matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """``(X X^T, Y X^T)`` as maintained incrementally (for tests)."""
        return self._gram.copy(), self._cross.copy()

    def get_state(self) -> dict[str, np.ndarray]:
        return {
            "ring": self._ring.copy(),
            "count": np.array(self._count, dtype=np.int64),
            "gram": self._gram.copy(),
            "cross": self._cross.copy(),
        }

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self._ring = np.array(state["ring"], dtype=np.float64)
        self._count = int(state["count"])
        self._gram = np.asfortranarray(state["gram"], dtype=np.float64)
        self._cross = np.asfortranarray(state["cross"], dtype=np.float64)
        self._fit = None
