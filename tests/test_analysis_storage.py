"""Analysis of runs: MBAR, importance reweighting and generation at unsimulated temperatures, storage readers, FES."""
import os

import numpy as np
import openmm
import pytest
from analytic import GaussianMixtureModel
from openmm import unit
from openmmtools import cache, multistate, states
from scipy.special import erfc
from scipy.stats import norm

from openmm_ddpm.analysis import (
    expected_mh_acceptance,
    free_energy_surface,
    generate_at_temperature,
    mbar_expectations,
    mbar_with_model_samples,
    reweight_run_and_model_samples,
    reweighted_expectation,
)
from openmm_ddpm.app.double_well import SeededParallelTemperingSampler
from openmm_ddpm.app.plots import plot_free_energy_surfaces
from openmm_ddpm.moves import reduced_potentials
from openmm_ddpm.moves.streaming import SeededLangevinDynamicsMove
from openmm_ddpm.multistate.storage import (
    neighbour_swap_acceptance,
    read_reduced_potentials,
    read_state_trajectories,
    read_temperatures_kelvin,
)


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
    exact = 0.5 * erfc(1.0 / np.sqrt(2.0 * np.array(result.temperatures_kelvin) / 300.0))
    deviations = np.abs(np.array(result.mean) - exact) / np.array(result.error)
    assert np.all(deviations < 4.0), (result, exact)
    assert result.thinning >= 5  # g = (1 + 0.8) / (1 - 0.8) = 9 for x; the indicator's is similar
    assert np.all(np.array(result.error) < 0.02)
    sampled_only = mbar_expectations(u, x > 1.0, temperatures)  # no target temperature: the sampled states alone
    np.testing.assert_allclose(sampled_only.mean, result.mean[:3], rtol=1e-10)


GRID = np.linspace(-3.0, 3.0, 200001)


def tilted_double_well_kt(x, kelvin):
    """Reduced potential of a double well whose left basin (x < 0) is 5 kT above the right one at 300 K."""
    return (300.0 / kelvin) * (5.0 * (x**2 - 1.0) ** 2 - 2.5 * x)


def exact_draws(log_density, n, rng):
    """n independent draws of a 1-D density on GRID by inverting its CDF."""
    density = np.exp(log_density(GRID) - log_density(GRID).max())
    cdf = np.cumsum(density)
    return np.interp(rng.uniform(size=n) * cdf[-1], cdf, GRID)


def left_population(kelvin):
    weights = np.exp(-tilted_double_well_kt(GRID, kelvin) + tilted_double_well_kt(GRID, kelvin).min())
    return float(weights[GRID < 0].sum() / weights.sum())


def run_and_model_estimate(rng, temperatures, target, n_per_state, model_mean, model_width, n_model):
    """Left-basin population at ``target`` from exact draws of each state and of a Gaussian 'model' q drawn there."""
    x = np.stack([exact_draws(lambda g, t=t: -tilted_double_well_kt(g, t), n_per_state, rng) for t in temperatures], axis=1)
    reduced = tilted_double_well_kt(x[:, :, None], np.asarray(temperatures)[None, None, :])
    y = rng.normal(model_mean, model_width, size=n_model)
    pooled = reweight_run_and_model_samples(reduced, x < 0, temperatures, target, norm.logpdf(x, model_mean, model_width),
                                            tilted_double_well_kt(y, target), norm.logpdf(y, model_mean, model_width), y < 0)
    model_alone = reweighted_expectation(-tilted_double_well_kt(y, target) - norm.logpdf(y, model_mean, model_width), y < 0)
    return pooled, model_alone


def test_mbar_with_model_samples_stays_right_where_the_model_misses_a_basin():
    """A 'model' q = N(1, 0.35^2) that never reaches the left basin, at 400 K between simulated 300, 600, 1200 K.

    Reweighting q alone is confidently wrong (no left-basin sample, error ~0);
    with the simulated states in the mixture the estimate is right and its
    error bar is calibrated over repetitions; the model carries the right basin.
    """
    rng = np.random.default_rng(11)
    temperatures, target = [300.0, 600.0, 1200.0], 400.0
    exact = left_population(target)
    assert 0.01 < exact < 0.05
    pooled, model_alone = run_and_model_estimate(rng, temperatures, target, 300, 1.0, 0.35, 2000)
    assert abs(model_alone.mean - exact) > 4 * max(model_alone.error, 1e-12)
    assert abs(pooled.mean - exact) < 4 * pooled.error and pooled.error < 0.012
    assert pooled.model_weight_fraction > 0.5 and pooled.n_model == 2000
    repeats = [run_and_model_estimate(rng, temperatures, target, 150, 1.0, 0.35, 500)[0] for _ in range(60)]
    means, errors = np.array([r.mean for r in repeats]), np.array([r.error for r in repeats])
    assert abs(means.mean() - exact) < 4 * means.std() / np.sqrt(len(means))
    assert 0.7 < errors.mean() / means.std() < 1.4


def test_mbar_with_model_samples_gains_from_a_good_model_and_drops_samples_outside_its_support():
    """q = the exact 400 K density: the error falls below that of either source alone; model samples
    outside the model's support (log q NaN) are dropped, and a per-sample shift of every u, or a shift of
    each state's normalisation by hundreds of kT, changes nothing."""
    rng = np.random.default_rng(5)
    temperatures, target = np.array([300.0, 600.0, 1200.0]), 400.0
    x = np.concatenate([exact_draws(lambda g, t=t: -tilted_double_well_kt(g, t), 200, rng) for t in temperatures])
    y = exact_draws(lambda g: -tilted_double_well_kt(g, target), 600, rng)
    samples = np.concatenate([x, y])
    u_kn = tilted_double_well_kt(samples[None, :], temperatures[:, None])
    u_target = tilted_double_well_kt(samples, target)
    log_q = -u_target  # unnormalised: MBAR estimates the model's normalisation like any state's
    pooled = mbar_with_model_samples(u_kn, [200] * 3, log_q, samples < 0, u_target)
    alone = mbar_with_model_samples(u_kn[:, :600], [200] * 3, log_q[:600], x < 0, u_target[:600])
    assert alone.n_model == 0 and alone.model_weight_fraction == 0.0
    assert abs(pooled.mean - left_population(target)) < 4 * pooled.error
    exact = left_population(target)
    assert pooled.error < min(alone.error, np.sqrt(exact * (1 - exact) / 600))  # better than either source alone
    assert pooled.ess > 600
    with_outside = mbar_with_model_samples(np.hstack([u_kn, np.zeros((3, 5))]), [200] * 3, np.append(log_q, [np.nan] * 5),
                                           np.append(samples < 0, [1.0] * 5), np.append(u_target, np.zeros(5)))
    assert with_outside.n_model == 600 and with_outside.mean == pytest.approx(pooled.mean, abs=1e-12)
    shift = rng.normal(size=len(samples)) * 10
    shifted = mbar_with_model_samples(u_kn + shift, [200] * 3, log_q - shift, samples < 0, u_target + shift)
    assert shifted.mean == pytest.approx(pooled.mean, abs=1e-9)
    assert shifted.error == pytest.approx(pooled.error, rel=1e-6)
    # states' and model's normalisations hundreds of kT apart, as on molecules: MBAR still converges to the same answer
    offsets = np.array([0.0, 300.0, -500.0])[:, None]
    offset = mbar_with_model_samples(u_kn + offsets, [200] * 3, log_q + 400.0, samples < 0, u_target - 200.0)
    assert offset.mean == pytest.approx(pooled.mean, abs=1e-9)
    with pytest.raises(ValueError, match="do not describe the same samples"):
        mbar_with_model_samples(u_kn, [200] * 4, log_q, samples < 0, u_target)


def test_reweighted_expectation_is_unbiased_and_its_error_is_calibrated():
    """Samples of q = N(0, 1.5^2) reweighted to pi = N(0.5, 1): P(x > 1) = 1 - Phi(0.5)."""
    rng = np.random.default_rng(7)
    exact = 1.0 - norm.cdf(0.5)
    estimates, errors = [], []
    for _ in range(300):
        y = rng.normal(size=500) * 1.5
        log_w = norm.logpdf(y, 0.5, 1.0) - norm.logpdf(y, 0.0, 1.5)
        estimate = reweighted_expectation(log_w, y > 1.0)
        mean, error, ess = estimate.mean, estimate.error, estimate.ess
        estimates.append(mean)
        errors.append(error)
    assert abs(np.mean(estimates) - exact) < 4 * np.std(estimates) / np.sqrt(len(estimates))
    assert 0.8 < np.mean(errors) / np.std(estimates) < 1.25
    assert 0.4 * 500 < ess < 500  # a mismatched q: fewer effective samples than draws
    degenerate = reweighted_expectation([0.0, -np.inf, np.nan], [1.0, 0.0, 0.0])
    assert (degenerate.mean, degenerate.error, degenerate.ess) == (1.0, 0.0, 1.0)


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
    estimate = reweighted_expectation(log_weights, left)
    estimate, error, ess = estimate.mean, estimate.error, estimate.ess
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
    # every random stream seeded (integrator, replica mixing): the run, and so this test, repeats exactly
    move = SeededLangevinDynamicsMove(timestep=2.0 * unit.femtosecond, n_steps=50, random_seed=7)
    sampler = SeededParallelTemperingSampler(seed=7, mcmc_moves=move, number_of_iterations=12, online_analysis_interval=None)
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
    assert acceptance.shape == (2,) and np.all(acceptance > 0.0)  # neighbours exchange (a ladder that never swaps reads 0)

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
