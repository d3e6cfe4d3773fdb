"""The multiple-try move: selection law, exact invariance by enumeration and on the double well, robustness."""
import itertools

import numpy as np
import openmm
import pytest
from analytic import GaussianMixtureModel
from conftest import run_chain
from openmm import unit
from openmmtools import mcmc, states

from openmm_ddpm.analysis import batch_means_standard_error
from openmm_ddpm.moves import GenerativeProposal
from openmm_ddpm.moves.multiple_try import effective_sample_size, multiple_try_select, transition_probabilities

TEMPERATURE = 300.0 * unit.kelvin


def mixture_for(double_well, left_weight=0.5, stddev=0.15):
    """A broad analytic proposal with deliberately wrong (50/50) populations."""
    means = [double_well.minimum_positions(w).value_in_unit(unit.nanometer) for w in (0, 1)]
    return GaussianMixtureModel(means, [stddev, stddev], [left_weight, 1.0 - left_weight])


def langevin_then(proposal, n_steps=50):
    dynamics = mcmc.LangevinDynamicsMove(
        timestep=2.0 * unit.femtosecond, collision_rate=1.0 / unit.picosecond, n_steps=n_steps, reassign_velocities=False
    )
    return mcmc.SequenceMove([dynamics, proposal])


def left_population(wells):
    left = (wells == 0).astype(float)
    return left.mean(), batch_means_standard_error(left)


def test_multiple_try_selection_frequencies():
    """Candidate j moves with probability (w_j / S) min(1, S / (S - w_j + w_0))."""
    rng = np.random.default_rng(1)
    w = np.array([0.3, 0.2, 0.0, 0.1])
    log_weights = np.log(np.where(w > 0, w, 1.0)) - 3.0
    log_weights[2] = -np.inf
    total = w[1:].sum()
    expected = np.array([0.0] + [w[j] / total * min(1.0, total / (total - w[j] + w[0])) if w[j] else 0.0 for j in (1, 2, 3)])
    expected[0] = 1.0 - expected.sum()
    n = 40000
    counts = np.bincount([multiple_try_select(log_weights, rng) for _ in range(n)], minlength=4)
    assert counts[2] == 0
    assert np.all(np.abs(counts - expected * n) < 4 * np.sqrt(expected * n + 1)), (counts, expected * n)
    assert multiple_try_select([0.0, -np.inf], rng) == 0
    assert multiple_try_select([-900.0, 0.0], rng) == 1  # independence MH: a better candidate is always taken
    assert multiple_try_select([0.0, -900.0, -950.0], rng) == 0  # weights far below the current one: no NaN


def mtm_accept(total, w_selected, w_current):
    return min(1.0, total / (total - w_selected + w_current))


def transition_matrix(pi, q, n_candidates, accept=mtm_accept):
    """A multiple-try kernel on a finite space, by enumerating every candidate tuple and outcome."""
    n = len(pi)
    w = pi / q
    matrix = np.zeros((n, n))
    for x in range(n):
        for candidates in itertools.product(range(n), repeat=n_candidates):
            p_candidates = np.prod(q[list(candidates)])
            weights = w[list(candidates)]
            total = weights.sum()
            for j, y in enumerate(candidates):
                p_accept = accept(total, weights[j], w[x])
                matrix[x, y] += p_candidates * weights[j] / total * p_accept
                matrix[x, x] += p_candidates * weights[j] / total * (1.0 - p_accept)
    return matrix


@pytest.mark.parametrize("n_candidates", [1, 2, 3])
def test_multiple_try_kernel_leaves_the_target_exactly_invariant(n_candidates):
    """pi P = pi and detailed balance to machine precision, for a proposal far from pi."""
    pi = np.array([0.5, 0.25, 0.15, 0.07, 0.03])
    q = np.array([0.05, 0.1, 0.2, 0.25, 0.4])
    matrix = transition_matrix(pi, q, n_candidates)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-14)
    np.testing.assert_allclose(pi @ matrix, pi, atol=1e-14)
    flux = pi[:, None] * matrix
    np.testing.assert_allclose(flux, flux.T, atol=1e-14)
    # negative control: leaving the current weight out of the reverse total breaks invariance
    wrong = transition_matrix(pi, q, n_candidates, accept=lambda total, w_j, w_x: min(1.0, total / max(total - w_j, w_j)))
    assert np.abs(pi @ wrong - pi).max() > 1e-3


def test_multiple_try_moves_at_least_as_often_as_isir():
    """Peskun order: every off-diagonal transition probability of the multiple-try kernel >= i-SIR's."""
    pi = np.array([0.5, 0.25, 0.15, 0.07, 0.03])
    q = np.array([0.05, 0.1, 0.2, 0.25, 0.4])
    w = pi / q
    mtm = transition_matrix(pi, q, 1)
    isir = q[None, :] * w[None, :] / (w[:, None] + w[None, :])
    off = ~np.eye(len(pi), dtype=bool)
    assert np.all(mtm[off] >= isir[off] - 1e-15)
    stationary_acceptance = [(pi[:, None] * kernel)[off].sum() for kernel in (mtm, isir)]
    assert stationary_acceptance[0] > 1.1 * stationary_acceptance[1]  # 0.155 vs 0.128 here


def test_effective_sample_size_limits():
    assert effective_sample_size(np.zeros(8)) == pytest.approx(8.0)
    assert effective_sample_size([0.0, -np.inf, -np.inf]) == pytest.approx(1.0)
    assert effective_sample_size([0.0, -800.0]) == pytest.approx(1.0)


@pytest.mark.parametrize("n_candidates", [1, 8])
def test_analytic_proposal_gives_exact_populations(double_well, reference_context_cache, n_candidates):
    """(a) Langevin + multiple-try moves with a fixed, wrong (50/50) proposal recovers ~90/10."""
    proposal = GenerativeProposal(mixture_for(double_well), n_candidates=n_candidates, random_state=10 + n_candidates)
    wells = run_chain(double_well, langevin_then(proposal), TEMPERATURE, 4000, reference_context_cache)
    estimate, error = left_population(wells)
    exact = double_well.exact_populations(TEMPERATURE).left
    assert abs(estimate - exact) < 4 * error, (estimate, error, exact)
    assert error < 0.02  # the test has the power to see a wrong answer
    assert proposal.statistics.n_moves == 4000 and proposal.statistics.n_accepted > 200


def test_k1_and_k8_agree(double_well, reference_context_cache):
    """(c) the number of candidates changes efficiency, not the answer."""
    estimates = []
    for n_candidates, seed in ((1, 21), (8, 22)):
        proposal = GenerativeProposal(mixture_for(double_well, 0.3), n_candidates=n_candidates, random_state=seed)
        estimates.append(left_population(run_chain(double_well, proposal, TEMPERATURE, 4000, reference_context_cache)))
    (a, error_a), (b, error_b) = estimates
    assert abs(a - b) < 4 * np.hypot(error_a, error_b), estimates


class DensityIgnoringModel(GaussianMixtureModel):
    """A model that reports log q = 0: the move then targets pi * q, not pi."""

    def sample(self, n, temperature, generator=None, reference_positions=None):
        positions, _ = super().sample(n, temperature, generator)
        return positions, np.zeros(n)

    def log_prob(self, positions, temperature):
        return np.zeros(len(positions))


def test_population_test_detects_a_wrong_density(double_well, reference_context_cache):
    """Negative control: dropping log q biases the chain far beyond the test's 4 sigma."""
    means = [double_well.minimum_positions(w).value_in_unit(unit.nanometer) for w in (0, 1)]
    wrong = DensityIgnoringModel(means, [0.15, 0.15], [0.02, 0.98])
    proposal = GenerativeProposal(wrong, n_candidates=1, random_state=5)
    estimate, error = left_population(run_chain(double_well, proposal, TEMPERATURE, 4000, reference_context_cache))
    exact = double_well.exact_populations(TEMPERATURE).left
    assert abs(estimate - exact) > 4 * error, (estimate, error, exact)


class BrokenModel(GaussianMixtureModel):
    """Three in four candidates are NaN, infinitely far, or outside the support."""

    def sample(self, n, temperature, generator=None, reference_positions=None):
        positions, log_q = super().sample(n, temperature, generator)
        positions[0::4] = np.nan
        positions[1::4] = np.inf
        log_q[2::4] = np.nan
        return positions, log_q


def test_invalid_candidates_get_weight_zero(double_well, reference_context_cache):
    proposal = GenerativeProposal(BrokenModel(*_mixture_args(double_well)), n_candidates=8, random_state=3)
    run_chain(double_well, proposal, TEMPERATURE, 200, reference_context_cache)
    stats = proposal.statistics
    assert stats.n_invalid_candidates == 200 * 6
    assert stats.n_accepted > 0
    log_weights = proposal.last_outcome.log_weights
    assert np.isfinite(log_weights[0]) and np.all(np.isneginf(np.delete(log_weights[1:], [3, 7])))


def _mixture_args(double_well):
    means = [double_well.minimum_positions(w).value_in_unit(unit.nanometer) for w in (0, 1)]
    return means, [0.15, 0.15], [0.5, 0.5]


class OutsideSupportModel(GaussianMixtureModel):
    def log_prob(self, positions, temperature):
        return np.full(len(positions), np.nan)


def test_current_state_outside_support_means_no_move(double_well, reference_context_cache):
    proposal = GenerativeProposal(OutsideSupportModel(*_mixture_args(double_well)), random_state=0)
    wells = run_chain(double_well, proposal, TEMPERATURE, 50, reference_context_cache, start_well=1)
    assert np.all(wells == 1)
    assert proposal.statistics.n_current_outside_support == 50 and proposal.statistics.n_accepted == 0


def test_same_seed_same_chain(double_well, reference_context_cache):
    chains = []
    for _ in range(2):
        proposal = GenerativeProposal(mixture_for(double_well), n_candidates=4, random_state=123)
        thermodynamic_state = states.ThermodynamicState(double_well.system, TEMPERATURE)
        sampler_state = states.SamplerState(double_well.minimum_positions(0))
        trajectory = []
        for _ in range(30):
            proposal.apply(thermodynamic_state, sampler_state, reference_context_cache)
            trajectory.append(sampler_state.positions.value_in_unit(unit.nanometer).copy())
        chains.append(np.array(trajectory))
    assert np.array_equal(chains[0], chains[1])


def test_unkeepable_constraints_and_periodic_systems_are_refused(double_well, reference_context_cache):
    """A constrained diatomic has no internal coordinates to keep its bond in (HBonds are kept: test_constraints)."""
    proposal = GenerativeProposal(mixture_for(double_well), random_state=0)
    constrained = openmm.System()
    for _ in range(2):
        constrained.addParticle(1.0)
    constrained.addConstraint(0, 1, 0.1)
    sampler_state = states.SamplerState(np.array([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0]]) * unit.nanometer)
    with pytest.raises(ValueError, match="fewer than 3 atoms"):
        proposal.apply(states.ThermodynamicState(constrained, TEMPERATURE), sampler_state, reference_context_cache)
    periodic = openmm.System()
    periodic.addParticle(1.0)
    periodic.setDefaultPeriodicBoxVectors(*(np.eye(3) * 2.0))
    force = openmm.NonbondedForce()
    force.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    force.addParticle(0.0, 0.3, 0.0)
    periodic.addForce(force)
    with pytest.raises(ValueError, match="periodic"):
        proposal.apply(
            states.ThermodynamicState(periodic, TEMPERATURE),
            states.SamplerState(np.zeros((1, 3)) * unit.nanometer, box_vectors=np.eye(3) * 2.0 * unit.nanometer),
            reference_context_cache,
        )


def test_virtual_sites_are_refused(double_well, reference_context_cache):
    system = openmm.System()
    for _ in range(3):
        system.addParticle(1.0)
    system.setVirtualSite(2, openmm.TwoParticleAverageSite(0, 1, 0.5, 0.5))
    positions = np.array([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.05, 0.0, 0.0]]) * unit.nanometer
    proposal = GenerativeProposal(mixture_for(double_well), random_state=0)
    with pytest.raises(ValueError, match="virtual sites"):
        proposal.apply(states.ThermodynamicState(system, TEMPERATURE), states.SamplerState(positions), reference_context_cache)


def test_bad_arguments_raise(double_well):
    with pytest.raises(ValueError, match="n_candidates"):
        GenerativeProposal(mixture_for(double_well), n_candidates=0)
    with pytest.raises(ValueError, match="current state"):
        multiple_try_select([np.nan, 0.0], np.random.default_rng(0))


class OlderProtocolModel:
    """A model written to the README's earlier protocol: ``sample(n, temperature, generator=None)`` only."""

    def __init__(self, model):
        self.model = model

    def sample(self, n, temperature, generator=None):
        return self.model.sample(n, temperature, generator=generator)

    def log_prob(self, positions, temperature):
        return self.model.log_prob(positions, temperature)


def test_a_model_without_the_optional_arguments_is_used_exactly(double_well, reference_context_cache):
    """The model protocol (openmm_ddpm.model.protocol) passes only the arguments a model takes;
    the chain is exact with such a model too (4 sigma, batch means over 4000 iterations)."""
    from openmm_ddpm.model import ProposalModel, RelabellingModel

    model = OlderProtocolModel(mixture_for(double_well))
    assert isinstance(model, ProposalModel) and not isinstance(model, RelabellingModel)
    proposal = GenerativeProposal(model, n_candidates=4, random_state=3)
    wells = run_chain(double_well, langevin_then(proposal), TEMPERATURE, 4000, reference_context_cache)
    estimate, error = left_population(wells)
    exact = double_well.exact_populations(TEMPERATURE).left
    assert abs(estimate - exact) < 4 * error and error < 0.02, (estimate, error, exact)
    assert proposal.statistics.n_accepted > 200


def test_transition_probabilities_are_those_of_the_move():
    """The probabilities of each point becoming the next state: the selection-acceptance formula, summing to 1,
    and the frequencies multiple_try_select draws (4 sigma over 40,000 moves)."""
    w = np.array([0.3, 0.2, 0.0, 0.1])
    log_weights = np.log(np.where(w > 0, w, 1.0)) - 3.0
    log_weights[2] = -np.inf
    total = w[1:].sum()
    expected = np.array([0.0] + [w[j] / total * mtm_accept(total, w[j], w[0]) if w[j] else 0.0 for j in (1, 2, 3)])
    expected[0] = 1.0 - expected.sum()
    probabilities = transition_probabilities(log_weights)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-12, atol=1e-15)
    rng, n = np.random.default_rng(5), 40000
    counts = np.bincount([multiple_try_select(log_weights, rng) for _ in range(n)], minlength=4)
    assert np.all(np.abs(counts - probabilities * n) < 4 * np.sqrt(probabilities * n + 1)), (counts, probabilities * n)
    assert transition_probabilities([0.0, -np.inf, -np.inf]).tolist() == [1.0, 0.0, 0.0]
    assert transition_probabilities([-900.0, 0.0]).tolist() == [0.0, 1.0]
    far = transition_probabilities([0.0, -900.0, -950.0])
    assert np.all(np.isfinite(far)) and far.sum() == pytest.approx(1.0) and far[0] == pytest.approx(1.0)


@pytest.mark.parametrize("n_candidates", [1, 3])
def test_recycling_every_candidate_keeps_the_expectation_exact(n_candidates):
    """Enumerated on 4 states: averaging sum_i P_i f(z_i) over a stationary chain gives E_pi[f] for every f,
    since the P_i are the move's own transition law; recycling with uniform weights over the K + 1 points
    (the negative control) does not."""
    pi, q = np.array([0.5, 0.3, 0.15, 0.05]), np.array([0.1, 0.2, 0.3, 0.4])
    log_w = np.log(pi / q)
    recycled, uniform = np.zeros((4, 4)), np.zeros((4, 4))
    for x in range(4):
        for candidates in itertools.product(range(4), repeat=n_candidates):
            p_candidates = np.prod(q[list(candidates)])
            points = [x, *candidates]
            probabilities = transition_probabilities(log_w[points])
            for point, p in zip(points, probabilities):
                recycled[x, point] += p_candidates * p
                uniform[x, point] += p_candidates / len(points)
    np.testing.assert_allclose(pi @ recycled, pi, atol=1e-12)
    assert np.abs(pi @ uniform - pi).max() > 0.05


def test_recycled_estimate_is_exact_on_the_double_well_and_beats_the_accepted_states(double_well, reference_context_cache):
    """(a)'s chain with K = 8: the recycled P(left) agrees with the exact value (4 sigma, batch means over 2000
    moves) with a smaller error than the accepted states' (measured 0.0036 vs 0.0066 for seed 21: 3.3x fewer
    moves for the same error); uniform weights
    over the K + 1 points, the negative control, are off by more than 4 sigma."""
    proposal = GenerativeProposal(mixture_for(double_well), n_candidates=8, random_state=21)
    move = langevin_then(proposal)
    thermodynamic_state = states.ThermodynamicState(double_well.system, TEMPERATURE)
    sampler_state = states.SamplerState(double_well.minimum_positions(0))
    accepted, recycled, uniform = [], [], []
    for _ in range(2000):
        move.apply(thermodynamic_state, sampler_state, reference_context_cache)
        outcome = proposal.last_outcome
        left = (double_well.well_index(outcome.configurations) == 0).astype(float)
        accepted.append(float(double_well.well_index(sampler_state.positions.value_in_unit(unit.nanometer))[0] == 0))
        recycled.append(outcome.recycled(left))
        uniform.append(left.mean())
    exact = double_well.exact_populations(TEMPERATURE).left
    estimates = {name: (np.mean(series), batch_means_standard_error(series))
                 for name, series in (("accepted", accepted), ("recycled", recycled), ("uniform", uniform))}
    assert abs(estimates["recycled"][0] - exact) < 4 * estimates["recycled"][1], estimates
    assert abs(estimates["accepted"][0] - exact) < 4 * estimates["accepted"][1], estimates
    assert estimates["recycled"][1] < estimates["accepted"][1], estimates
    assert abs(estimates["uniform"][0] - exact) > 4 * estimates["uniform"][1], estimates
