"""Analysis of runs: MBAR, importance reweighting and generation at unsimulated temperatures, storage readers, FES."""
import os

import numpy as np
import openmm
import pytest
from analytic import GaussianMixtureModel
from openmm import unit
from openmmtools import cache, mcmc, multistate, states
from scipy.special import erfc
from scipy.stats import norm

from openmm_ddpm.analysis import (expected_mh_acceptance, free_energy_surface, generate_at_temperature, mbar_expectations,
                                  reweighted_expectation)
from openmm_ddpm.plots import plot_free_energy_surfaces
from openmm_ddpm.proposal import reduced_potentials
from openmm_ddpm.storage import (neighbour_swap_acceptance, read_reduced_potentials, read_state_trajectories,
                                 read_temperatures_kelvin)


def ar1_normal(n, rho, scale, rng):
    """Stationary AR(1) chain with marginal N(0, scale^2)."""
    x = np.empty(n)
    x[0] = rng.normal() * scale
    noise = rng.normal(size=n) * scale * np.sqrt(1 - rho**2)
    for i in range(1, n):
        x[i] = rho * x[i - 1] + noise[i]
    return x


def test_mbar_reweights_harmonic_oscillators_to_sampled_and_unsimulated_temperatures():
    """u = x^2 / (2 s^2), s^2 = T / 300: P(x > 1) = erfc(1 / sqrt(2 s^2)) / 2 at every T, from correlated chains."""
    rng = np.random.default_rng(3)
    temperatures = np.array([300.0, 420.0, 600.0])
    n = 6000
    x = np.stack([ar1_normal(n, 0.8, np.sqrt(t / 300.0), rng) for t in temperatures], axis=1)  # (n, states)
    u = x[:, :, None] ** 2 / (2.0 * temperatures[None, None, :] / 300.0)
    result = mbar_expectations(u, x > 1.0, temperatures, target_temperatures_kelvin=[350.0, 500.0])
    exact = 0.5 * erfc(1.0 / np.sqrt(2.0 * np.array(result["temperatures_kelvin"]) / 300.0))
    deviations = np.abs(np.array(result["mean"]) - exact) / np.array(result["error"])
    assert np.all(deviations < 4.0), (result, exact)
    assert result["thinning"] >= 5  # g = (1 + 0.8) / (1 - 0.8) = 9 for x; the indicator's is similar
    assert np.all(np.array(result["error"]) < 0.02)


def test_reweighted_expectation_is_unbiased_and_its_error_is_calibrated():
    """Samples of q = N(0, 1.5^2) reweighted to pi = N(0.5, 1): P(x > 1) = 1 - Phi(0.5)."""
    rng = np.random.default_rng(7)
    exact = 1.0 - norm.cdf(0.5)
    estimates, errors = [], []
    for _ in range(300):
        y = rng.normal(size=500) * 1.5
        log_w = norm.logpdf(y, 0.5, 1.0) - norm.logpdf(y, 0.0, 1.5)
        mean, error, ess = reweighted_expectation(log_w, y > 1.0)
        estimates.append(mean)
        errors.append(error)
    assert abs(np.mean(estimates) - exact) < 4 * np.std(estimates) / np.sqrt(len(estimates))
    assert 0.8 < np.mean(errors) / np.std(estimates) < 1.25
    assert 0.4 * 500 < ess < 500  # a mismatched q: fewer effective samples than draws
    assert reweighted_expectation([0.0, -np.inf, np.nan], [1.0, 0.0, 0.0])[:2] == (1.0, 0.0)


def test_expected_mh_acceptance_matches_an_independence_chain():
    """pi = N(0, 1), q = N(0.5, 1.5^2): the pair average equals the acceptance rate of the actual chain."""
    rng = np.random.default_rng(11)

    def log_w(x):
        return norm.logpdf(x, 0.0, 1.0) - norm.logpdf(x, 0.5, 1.5)

    expected = expected_mh_acceptance(log_w(rng.normal(size=3000)), log_w(rng.normal(0.5, 1.5, size=3000)))
    n, accepted = 100_000, 0
    log_w_proposals, log_uniforms = log_w(rng.normal(0.5, 1.5, size=n)), np.log(rng.random(n))
    log_w_current = log_w(0.0)
    for log_w_y, log_u in zip(log_w_proposals, log_uniforms):
        if log_u < log_w_y - log_w_current:
            log_w_current, accepted = log_w_y, accepted + 1
    assert abs(expected - accepted / n) < 0.015, (expected, accepted / n)
    assert expected_mh_acceptance([0.0, 1.0], [0.0, 1.0]) == pytest.approx((3.0 + np.exp(-1.0)) / 4.0)
    assert expected_mh_acceptance([0.0], [-np.inf, np.nan]) == 0.0


def test_generation_at_an_unsimulated_temperature_recovers_the_exact_populations(double_well, reference_context_cache):
    """A wrong 50/50 proposal, weighted by exp(-u_T) / q, gives the exact well populations at 350 K."""
    means = [double_well.minimum_positions(w).value_in_unit(unit.nanometer) for w in (0, 1)]
    model = GaussianMixtureModel(means, [0.15, 0.15], [0.5, 0.5])
    temperature = 350.0 * unit.kelvin
    positions, log_weights = generate_at_temperature(model, double_well.system, temperature, 3000,
                                                     reference_positions=double_well.minimum_positions(0), seed=1,
                                                     context_cache=reference_context_cache)
    left = double_well.well_index(positions) == 0
    estimate, error, ess = reweighted_expectation(log_weights, left)
    exact = double_well.exact_populations(temperature).left
    assert abs(estimate - exact) < 4 * error and error < 0.03, (estimate, error, exact)
    assert abs(left.mean() - exact) > 8 * error  # the unweighted model samples are far off: the weights do the work
    assert 100 < ess < 3000


def test_free_energy_surface_of_known_counts():
    phi = np.array([-3.0, -3.0, -3.0, 1.0])
    psi = np.array([2.0, 2.0, 2.0, -1.0])
    free_energy, edges = free_energy_surface(phi, psi, bins=4)
    assert edges[0] == pytest.approx(-np.pi) and edges[-1] == pytest.approx(np.pi)
    assert free_energy[0, 3] == 0.0 and free_energy[2, 1] == pytest.approx(np.log(3.0))
    assert np.isinf(free_energy).sum() == 14


def test_storage_readers_agree_with_openmm(tmp_path, double_well):
    """Per-state trajectories and reduced potentials read back from a plain PT run match OpenMM's energies."""
    cache.global_context_cache.empty()
    cache.global_context_cache.platform = openmm.Platform.getPlatformByName("Reference")
    storage = str(tmp_path / "pt.nc")
    temperatures = [300.0, 450.0, 700.0] * unit.kelvin
    move = mcmc.LangevinDynamicsMove(timestep=2.0 * unit.femtosecond, n_steps=50)
    sampler = multistate.ParallelTemperingSampler(mcmc_moves=move, number_of_iterations=12, online_analysis_interval=None)
    reporter = multistate.MultiStateReporter(storage, checkpoint_interval=100,
                                             analysis_particle_indices=list(range(double_well.system.getNumParticles())))
    sampler.create(states.ThermodynamicState(double_well.system, temperatures[0]),
                   states.SamplerState(double_well.minimum_positions(0)), reporter,
                   temperatures=temperatures, n_temperatures=3)
    sampler.run()
    del sampler
    reporter.close()

    np.testing.assert_allclose(read_temperatures_kelvin(storage), [300.0, 450.0, 700.0])
    iterations, positions = read_state_trajectories(storage, first_iteration=3)
    u = read_reduced_potentials(storage, first_iteration=3)
    assert iterations.tolist() == list(range(3, 13)) and positions.shape == (10, 3, double_well.system.getNumParticles(), 3)
    assert u.shape == (10, 3, 3)
    context_cache = cache.ContextCache(platform=openmm.Platform.getPlatformByName("Reference"))
    for k, temperature in enumerate(temperatures):
        state = states.ThermodynamicState(double_well.system, temperature)
        recomputed = reduced_potentials(state, states.SamplerState(positions[0, k] * unit.nanometer), positions[:, k], context_cache)
        np.testing.assert_allclose(recomputed, u[:, k, k], rtol=1e-4)  # positions are stored in float32
    kelvin = np.array([300.0, 450.0, 700.0])
    np.testing.assert_allclose(u * kelvin[None, None, :], (u[:, :, 0] * 300.0)[:, :, None] * np.ones(3), rtol=1e-10)
    acceptance = neighbour_swap_acceptance(storage)
    assert acceptance.shape == (2,) and np.all((0.0 <= acceptance) & (acceptance <= 1.0))

    plot_free_energy_surfaces(np.random.default_rng(0).uniform(-np.pi, np.pi, (200, 3)),
                              np.random.default_rng(1).uniform(-np.pi, np.pi, (200, 3)), kelvin, str(tmp_path / "fes.png"))
    assert os.path.getsize(tmp_path / "fes.png") > 10_000
    with pytest.raises(ValueError, match="analysis particles"):
        storage_without = str(tmp_path / "plain.nc")
        plain = multistate.ParallelTemperingSampler(mcmc_moves=move, number_of_iterations=2, online_analysis_interval=None)
        plain_reporter = multistate.MultiStateReporter(storage_without, checkpoint_interval=100)
        plain.create(states.ThermodynamicState(double_well.system, temperatures[0]),
                     states.SamplerState(double_well.minimum_positions(0)), plain_reporter,
                     temperatures=temperatures, n_temperatures=3)
        plain.run()
        plain_reporter.close()
        read_state_trajectories(storage_without)
