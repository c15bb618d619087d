import numpy as np
import pytest

from episodic_koopman.rank import (
    NUMERICAL_RTOL,
    drift_rtol,
    gavish_donoho_omega,
    select_rank,
    validate_rank_rule,
)


def test_fixed_rank_is_capped_by_numerical_rank_and_max_rank():
    sigma = np.array([3.0, 2.0, 1.0, 1e-9, 0.0])
    assert select_rank(sigma, 5, 50, 10) == 3
    assert select_rank(sigma, 5, 50, 2) == 2
    assert select_rank(sigma, 5, 50, 3, max_rank=1) == 1


def test_energy_rule_reaches_the_fraction():
    sigma = np.array([4.0, 2.0, 1.0, 1.0])  # energies 16, 4, 1, 1 of 22
    assert select_rank(sigma, 4, 40, 16 / 22) == 1
    assert select_rank(sigma, 4, 40, 0.9) == 2
    assert select_rank(sigma, 4, 40, 1.0) == 4


def test_gavish_donoho_recovers_planted_rank_in_noise():
    rng = np.random.default_rng(0)
    n, m, r = 40, 400, 3
    signal = rng.standard_normal((n, r)) @ rng.standard_normal((r, m)) * 3.0
    noisy = signal + 0.1 * rng.standard_normal((n, m))
    sigma = np.linalg.svd(noisy, compute_uv=False)
    assert select_rank(sigma, n, m, "gd") == r


def test_gavish_donoho_omega_known_value():
    # Square matrices: omega(1) = 2.858 (Gavish & Donoho 2014, Table IV).
    assert gavish_donoho_omega(1.0) == pytest.approx(2.86, abs=0.01)


@pytest.mark.parametrize("bad", [0, -1, 1.5, 0.0, "energy", None, True])
def test_invalid_rules_are_rejected(bad):
    with pytest.raises((ValueError, TypeError)):
        validate_rank_rule(bad)


def test_drift_floor_is_the_numerical_floor_unless_refits_are_rare():
    # Defaults (refit every window): rounding drift stays far below the fixed floor.
    assert drift_rtol(2 * 256, 256) == NUMERICAL_RTOL
    # No exact refit for 10^9 steps: directions weaker than the drift are not data.
    assert drift_rtol(2 * 10**9, 64) > 100 * NUMERICAL_RTOL
    assert drift_rtol(2 * 10**9, 64) < drift_rtol(2 * 10**10, 64)


def test_rare_refits_drop_directions_below_the_gram_drift():
    # Three strong directions and one at 1e-5 of the largest (1e-10 in the Gram matrix).
    sigma = np.array([1.0, 0.5, 0.2, 1e-5, 0.0, 0.0])
    assert select_rank(sigma, 6, 64, 6) == 4
    assert select_rank(sigma, 6, 64, 6, rtol=drift_rtol(2 * 256, 64)) == 4
    assert select_rank(sigma, 6, 64, 6, rtol=drift_rtol(2 * 10**9, 64)) == 3
