"""Stratified importance sampling on a 1-D two-basin density whose basin partition functions are known exactly.

Target: p(x) = 0.995 N(-1.5, 0.3^2) + 0.005 N(1.5, 0.2^2) (normalised: Z = 1), u = -ln p; the rare stratum is
x > 0. All draws come from numpy generators with fixed seeds, so each test is deterministic; the stated
floors say how unlikely a failure would be for a random seed.
"""
import numpy as np
import pytest
from scipy.stats import norm

from openmm_ddpm.analysis import (population_free_energy_kt, reweighted_expectation,
                                  stratified_free_energy_difference_kt, stratum_log_partition_function)

WEIGHTS, MEANS, SDS = (0.995, 0.005), (-1.5, 1.5), (0.3, 0.2)
Z_PLUS = sum(w * norm.sf(0.0, m, s) for w, m, s in zip(WEIGHTS, MEANS, SDS))
EXACT_DF = -np.log(Z_PLUS / (1.0 - Z_PLUS))


def reduced_potential(x):
    return -np.log(sum(w * norm.pdf(x, m, s) for w, m, s in zip(WEIGHTS, MEANS, SDS)))


def draws(rng, mean, sd, n, log_q_sd=None):
    """Gaussian proposal draws and their log w = -u - log q (log q with ``log_q_sd``: a wrong density)."""
    x = rng.normal(mean, sd, n)
    return x, -reduced_potential(x) - norm.logpdf(x, mean, sd if log_q_sd is None else log_q_sd)


def stratified_df(rng, n, plus=(1.4, 0.3), minus=(-1.4, 0.35), log_q_sd_plus=None):
    x_plus, log_w_plus = draws(rng, *plus, n, log_q_sd_plus)
    x_minus, log_w_minus = draws(rng, *minus, n)
    return stratified_free_energy_difference_kt(stratum_log_partition_function(log_w_plus, x_plus > 0),
                                                stratum_log_partition_function(log_w_minus, x_minus <= 0))


def test_each_stratum_partition_function_and_the_free_energy_match_the_exact_values():
    rng = np.random.default_rng(1)
    x, log_w = draws(rng, 1.4, 0.3, 20_000)
    plus = stratum_log_partition_function(log_w, x > 0)
    assert plus.draws == 20_000 and plus.ess > 5_000  # a proposal close to the basin: most draws count
    assert abs(plus.log_z - np.log(Z_PLUS)) < 3 * plus.log_z_error
    df, error = stratified_df(rng, 4_000)
    assert error < 0.05 and abs(df - EXACT_DF) < 3 * error  # 3 sigma: 0.3 % of seeds would fail


def test_draws_outside_their_stratum_count_as_zero_and_leave_it_unbiased():
    """A proposal centred on the boundary puts about half its draws outside the stratum: still exact."""
    rng = np.random.default_rng(2)
    x, log_w = draws(rng, 0.3, 0.8, 40_000)
    plus = stratum_log_partition_function(log_w, x > 0)
    assert 0.3 < plus.draws_inside / plus.draws < 0.7
    assert abs(plus.log_z - np.log(Z_PLUS)) < 3 * plus.log_z_error


def test_error_bars_are_calibrated_over_many_independent_estimates():
    """z = (dF - exact) / error over 300 seeds: mean ~0, sd ~1 (sd's sampling error 0.04: [0.85, 1.15] is +-3.7 of it)."""
    z = []
    for seed in range(300):
        df, error = stratified_df(np.random.default_rng(100 + seed), 1_000)
        z.append((df - EXACT_DF) / error)
    assert abs(np.mean(z)) < 0.2 and 0.85 < np.std(z) < 1.15


def test_stratifying_is_what_makes_the_rare_basin_visible():
    """The proposal of the main basin alone puts ~no draw where the rare basin's weight is; its own proposal does."""
    rng = np.random.default_rng(3)
    x, log_w = draws(rng, -1.4, 0.35, 4_000)
    single = reweighted_expectation(log_w, x > 0)
    assert stratum_log_partition_function(log_w, x > 0).ess < 5
    single_df = population_free_energy_kt(single.mean, single.error)[0]
    df, error = stratified_df(rng, 4_000)
    assert abs(df - EXACT_DF) < 3 * error < 0.15 and abs(single_df - EXACT_DF) > 1.0


@pytest.mark.parametrize("log_q_sd, log_q_offset", [(0.4, 0.0), (0.3, 0.3)])
def test_negative_control_a_wrong_proposal_density_is_caught(log_q_sd, log_q_offset):
    """log q of the rare stratum's proposal with the wrong width (0.4, not 0.3) or off by 0.3 nats:
    the estimate leaves the exact value by > 5 sigma (measured: 18 and 29 sigma; the right density: 1.3)."""
    rng = np.random.default_rng(4)
    x_plus, log_w_plus = draws(rng, 1.4, 0.3, 4_000, log_q_sd)
    x_minus, log_w_minus = draws(rng, -1.4, 0.35, 4_000)
    df, error = stratified_free_energy_difference_kt(
        stratum_log_partition_function(log_w_plus - log_q_offset, x_plus > 0),
        stratum_log_partition_function(log_w_minus, x_minus <= 0))
    assert abs(df - EXACT_DF) > 5 * error


def test_empty_and_malformed_strata():
    empty = stratum_log_partition_function(np.zeros(4), np.zeros(4, dtype=bool))
    assert empty.log_z == -np.inf and empty.ess == 0.0
    assert np.isnan(stratified_free_energy_difference_kt(empty, empty)[0])
    with pytest.raises(ValueError, match="same"):
        stratum_log_partition_function(np.zeros(3), np.zeros(4, dtype=bool))
