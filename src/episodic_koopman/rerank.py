"""The exact rerank: FAISS's candidates ranked by the exact match distance.

The distance (see `episodic_koopman.recall`) is::

    D^2 = w_eig^2 W2(eigenvalues)^2 + w_mode^2 M(matched modes)^2 + w_state^2 S(state)^2

`exact_distances` computes it with NumPy, one candidate per row; `nearest_exact` keeps
the ``top_k`` nearest. At the default zero mode weight the rerank runs as one compiled
loop (`_nearest_kernel`), which makes the same floats: every sum is added in the
order NumPy's ``add.reduce`` adds it (`episodic_koopman.numpy_order`), and the
eigenvalues are matched by the same assignments (`episodic_koopman.assignment`).
"""

from __future__ import annotations

import numpy as np

from .assignment import assign
from .jit import kernel
from .numpy_order import add_reduce, keep_best
from .recall import KeyWeights
from .spectrum import Signature

#: Candidates beyond this are ranked by NumPy: the compiled selection keeps its running
#: best by insertion, which suits the few dozen candidates a recall reranks.
_COMPILED_CANDIDATES = 512


def _matchings(
    signature: Signature, eigenvalues: np.ndarray, cand_ranks: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Squared distances between the query's and each candidate's eigenvalues ``(n, r, r)``,
    and each candidate's optimal matching ``(n, r)``."""
    n, r = eigenvalues.shape
    diff = signature.eigenvalues[None, :, None] - eigenvalues[:, None, :]
    cost = diff.real**2 + diff.imag**2
    perms = np.empty((n, r), dtype=np.int64)
    perms[:] = np.arange(r)
    for i, rank in enumerate(cand_ranks):
        k = max(signature.rank, rank)
        if not assign(cost[i], k, perms[i]):
            raise ValueError("eigenvalue distances must be finite to match spectra")
    return cost, perms


def _eigenvalue_term(cost: np.ndarray, perms: np.ndarray, weight: float) -> np.ndarray:
    """``(weight * W2)^2`` per candidate from `_matchings` (each row on its own)."""
    n, r = perms.shape
    # Means as NumPy's own mean computes them (sum, then divide), without its dispatch;
    # the matched costs gathered by one index (take_along_axis builds the same, slower).
    matched = cost[np.arange(n)[:, None], np.arange(r), perms]
    return (weight * np.sqrt(np.add.reduce(matched, axis=1) / r)) ** 2


def exact_distances(
    signature: Signature,
    state: np.ndarray,
    eigenvalues: np.ndarray,
    modes: np.ndarray,
    states: np.ndarray,
    weights: KeyWeights,
    ranks: np.ndarray | None = None,
    state_terms: np.ndarray | None = None,
) -> np.ndarray:
    """Exact rerank distances from the query to each candidate (rows of the arrays).

    ``ranks`` (the candidates' signature ranks) only saves counting their padding, and
    ``state_terms`` (``state_weight * S`` per candidate, as computed here) the state term.
    """
    n = eigenvalues.shape[0]
    if n == 0:
        return np.zeros(0)
    # Signatures hold their eigenvalues first and zero padding after. Padding matches
    # padding at no cost, so only the leading max(rank_a, rank_b) square needs solving.
    cand_ranks = (ranks if ranks is not None else np.count_nonzero(eigenvalues, axis=1)).tolist()
    cost, perms = _matchings(signature, eigenvalues, cand_ranks)
    total = _eigenvalue_term(cost, perms, weights.eigenvalues)
    if weights.modes > 0 and signature.modes.size:
        # Modes as interleaved real/imaginary parts: the same Euclidean distance, no complex abs.
        query_modes = np.ascontiguousarray(signature.modes).view(np.float64)
        cand_modes = np.ascontiguousarray(modes).view(np.float64)[np.arange(n)[:, None], perms]
        mode_dist = np.sqrt(np.sum((query_modes[None] - cand_modes) ** 2, axis=2).mean(axis=1))
        total = total + (weights.modes * mode_dist) ** 2
    if state.size:
        if state_terms is None:
            state_terms = weights.state * _state_distances(states, state)
        total = total + state_terms**2
    # A missing term adds +0.0, which changes no float: the same sum as all three.
    return np.sqrt(total)


def _state_distances(states: np.ndarray, state: np.ndarray) -> np.ndarray:
    """RMS distance of each row of ``states`` to ``state`` (each row on its own)."""
    gap = states - state
    return np.sqrt(np.add.reduce(gap * gap, axis=1) / state.size)


def nearest_exact(
    signature: Signature,
    state: np.ndarray,
    ids: np.ndarray,
    records: dict[str, np.ndarray],
    weights: KeyWeights,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the ``k`` candidates nearest by `exact_distances` (ties by id), and those
    distances: what ranking every candidate gives, with fewer optimal assignments.

    The state term alone bounds a distance from below (the other terms add non-negative
    amounts), and costs no assignment. Candidates are taken in order of that bound;
    once ``k`` exact distances are known, a candidate whose bound exceeds the ``k``-th
    of them cannot be among the nearest. `exact_distances` treats every row on its
    own, so the distances are those of ranking all candidates at once.
    """
    eigenvalues, ranks, states = records["eigenvalues"], records["rank"], records["state"]
    n = ids.shape[0]
    uses_modes = weights.modes > 0 and signature.modes.size > 0
    if not uses_modes and 0 < n <= _COMPILED_CANDIDATES:
        prune = n > k and state.size > 0 and weights.state > 0
        rows = np.empty(min(n, k), dtype=np.int64)
        distances = np.empty(rows.shape[0])
        done = _nearest_kernel(
            np.ascontiguousarray(signature.eigenvalues).view(np.float64),
            signature.rank,
            np.ascontiguousarray(state, dtype=np.float64).ravel(),
            np.ascontiguousarray(eigenvalues).view(np.float64),
            np.asarray(ranks, dtype=np.int64),
            np.ascontiguousarray(states, dtype=np.float64),
            np.asarray(ids, dtype=np.int64),
            float(weights.eigenvalues),
            float(weights.state),
            prune,
            rows,
            distances,
        )
        if done:
            return rows, distances
        # A distance that is not finite: NumPy's path says why.
    modes = records["modes"]
    if n <= k or not state.size or weights.state <= 0:
        distances = exact_distances(signature, state, eigenvalues, modes, states, weights, ranks)
        order = np.lexsort((ids, distances))[:k]
        return order, distances[order]
    # Each row's state term, as `exact_distances` computes it, is kept for it.
    state_terms = weights.state * _state_distances(states, state)

    def exact(rows: np.ndarray) -> np.ndarray:
        return exact_distances(
            signature,
            state,
            eigenvalues[rows],
            modes[rows] if uses_modes else modes,  # (gathering modes costs as much as the rest)
            states,  # unread: the state terms are given
            weights,
            ranks[rows],
            state_terms[rows],
        )

    # Shrunk by a relative 1e-12: a bound, whatever the rounding of the exact sum.
    floor = state_terms * (1.0 - 1e-12)
    by_floor = np.argsort(floor, kind="stable")
    rows = by_floor[:k]
    distances = exact(rows)
    rest = by_floor[k:]
    rest = rest[floor[rest] <= distances.max()]
    if rest.size:
        rows = np.concatenate([rows, rest])
        distances = np.concatenate([distances, exact(rest)])
    order = np.lexsort((ids[rows], distances))[:k]
    return rows[order], distances[order]


# -- the compiled rerank ------------------------------------------------------------------


@kernel
def _eigenvalue_term_of(
    query: np.ndarray,
    query_rank: int,
    spectrum: np.ndarray,
    rank: int,
    weight: float,
    cost: np.ndarray,
    matched: np.ndarray,
    columns: np.ndarray,
) -> float:
    """`_eigenvalue_term` of one candidate (interleaved real and imaginary parts); NaN where
    a distance between eigenvalues is not finite."""
    r = matched.shape[0]
    k = max(query_rank, rank)
    for a in range(k):
        for b in range(k):
            dr = query[2 * a] - spectrum[2 * b]
            di = query[2 * a + 1] - spectrum[2 * b + 1]
            cost[a, b] = dr * dr + di * di
    if not assign(cost, k, columns):
        return np.nan
    for a in range(r):
        b = columns[a] if a < k else a
        dr = query[2 * a] - spectrum[2 * b]
        di = query[2 * a + 1] - spectrum[2 * b + 1]
        matched[a] = dr * dr + di * di
    term = weight * np.sqrt(add_reduce(matched, 0, r) / r)
    return term * term


@kernel
def _nearest_kernel(
    query: np.ndarray,
    query_rank: int,
    state: np.ndarray,
    spectra: np.ndarray,
    ranks: np.ndarray,
    states: np.ndarray,
    ids: np.ndarray,
    eigenvalue_weight: float,
    state_weight: float,
    prune: bool,
    out_rows: np.ndarray,
    out_distances: np.ndarray,
) -> bool:
    """`nearest_exact` without mode shapes: the same rows and distances into ``out_rows``
    and ``out_distances``. False where an eigenvalue distance is not finite.

    Candidates sharing a spectrum (episodes of one fit) share their eigenvalue term:
    it is a function of the two spectra alone.
    """
    n, r, width = spectra.shape[0], query.shape[0] // 2, state.shape[0]
    k = out_rows.shape[0]
    # The state terms, as `_state_distances` makes them.
    state_terms = np.zeros(n)
    gap = np.empty(width)
    for i in range(n):
        for j in range(width):
            g = states[i, j] - state[j]
            gap[j] = g * g
        state_terms[i] = state_weight * np.sqrt(add_reduce(gap, 0, width) / width)
    # Which rows get an exact distance: every row, or the k lowest bounds and the rows
    # whose bound is within the k-th distance (in the order a stable argsort gives).
    chosen = np.empty(n, dtype=np.int64)
    if prune:
        floor = np.empty(n)
        for i in range(n):
            floor[i] = state_terms[i] * (1.0 - 1e-12)
        low_values, low_keys = np.empty(k), np.empty(k, dtype=np.int64)
        count = 0
        for i in range(n):
            count = keep_best(floor[i], i, i, low_values, low_keys, chosen, count)
    else:
        for i in range(n):
            chosen[i] = i
    cost = np.empty((r, r))
    matched = np.empty(r)
    columns = np.empty(r, dtype=np.int64)
    distances = np.empty(n)
    terms = np.empty(n)
    known = np.zeros(n, dtype=np.bool_)
    n_chosen = k if prune else n
    pass_ = 0
    while True:
        for c in range(n_chosen):
            i = chosen[c]
            if known[i]:
                continue
            term = np.nan
            for other in range(n):  # an earlier row with the same spectrum
                if not known[other] or ranks[other] != ranks[i]:
                    continue
                same = True
                for j in range(2 * r):
                    if spectra[other, j] != spectra[i, j]:
                        same = False
                        break
                if same:
                    term = terms[other]
                    break
            if np.isnan(term):
                term = _eigenvalue_term_of(
                    query,
                    query_rank,
                    spectra[i],
                    ranks[i],
                    eigenvalue_weight,
                    cost,
                    matched,
                    columns,
                )
                if np.isnan(term):
                    return False
            terms[i] = term
            total = term
            if width:
                total = total + state_terms[i] * state_terms[i]
            distances[i] = np.sqrt(total)
            known[i] = True
        if not prune or pass_ == 1:
            break
        # The rest whose bound is within the largest distance so far (NaN: none).
        largest = distances[chosen[0]]
        for c in range(1, k):
            d = distances[chosen[c]]
            if np.isnan(d) or d > largest:
                largest = d
        n_chosen = 0
        for i in range(n):
            if known[i] or floor[i] <= largest:
                chosen[n_chosen] = i
                n_chosen += 1
        pass_ = 1
    best_keys = np.empty(k, dtype=np.int64)
    count = 0
    for c in range(n_chosen):
        i = chosen[c]
        count = keep_best(distances[i], ids[i], i, out_distances, best_keys, out_rows, count)
    return True
