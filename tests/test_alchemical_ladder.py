"""Proposals on a ladder of states at one temperature (an alchemical-style ladder), held to exact populations.

The double well of ``app.double_well`` (barrier 70 kJ/mol: no MD crossing
in the run) with its tilt t a global parameter, t = t_0 + lambda * dt:
four ``CompoundThermodynamicState``s at 300 K that differ only in lambda,
as an alchemical ladder differs in its lambdas. One replica of four starts
in the left well; replica exchange only permutes configurations, so the
share of left-well configurations stays 1/4 and the lowest state's
population is wrong without proposals. ``DDPMReplicaExchangeSampler``
conditions its model on each state's place in the ladder and accepts
proposals with each state's own reduced potential; exact answer by
quadrature (``DoubleWell2D.exact_populations``). The negative control
runs the same frozen model's independence chain at state 0 with state 3's
reduced potential in the weights, and lands on state 3's population.
"""
import numpy as np
import openmm
import pytest
import torch
from openmm import unit
from openmmtools import cache, multistate, states

from openmm_ddpm.analysis import batch_means_standard_error, generate_with_densities
from openmm_ddpm.app import double_well
from openmm_ddpm.moves import GenerativeProposal
from openmm_ddpm.multistate import DDPMReplicaExchangeSampler, export_proposal_model, load_exported_model
from openmm_ddpm.multistate.conditioning import LADDER_POSITION, TEMPERATURE, state_conditioning
from openmm_ddpm.multistate.support import plain_replica_exchange_reason
from openmm_ddpm.settings import Settings
from openmm_ddpm.testsystems import DoubleWell2D

TEMPERATURE_KELVIN = 300.0
TILTS = (-2.0, -3.0, -4.0, -5.0)  # kJ/mol, states 0-3: exact P(left) 0.709, 0.523, 0.331, 0.183 at 300 K
N_ITERATIONS, FREEZE_AFTER, BURN_IN = 320, 80, 40


class TiltState(states.GlobalParameterState):
    """The tilt parameter of the double well, as openmmtools' alchemical states hold their lambdas."""

    lambda_tilt = states.GlobalParameterState.GlobalParameter("lambda_tilt", standard_value=0.0)


def double_well_with_tilt_parameter():
    """The double well of ``app.double_well`` whose tilt is t_0 + lambda_tilt * dt (t_0 = TILTS[0], dt = 1 kJ/mol)."""
    system = double_well.make_system()
    force = system.system.getForce(0)
    expression = system.energy_expression().replace(f"t={system.tilt_kj_per_mol!r};", "")
    force.setEnergyFunction(expression + f"; t={TILTS[0]!r} + lambda_tilt")
    force.addGlobalParameter("lambda_tilt", 0.0)
    return system


def ladder(system):
    base = states.ThermodynamicState(system.system, TEMPERATURE_KELVIN * unit.kelvin)
    return [states.CompoundThermodynamicState(base, [TiltState(lambda_tilt=tilt - TILTS[0])]) for tilt in TILTS]


def exact_left(tilt):
    shape = double_well.make_system()
    return DoubleWell2D(barrier_height=70.0 * unit.kilojoule_per_mole, tilt=tilt * unit.kilojoule_per_mole,
                        width_asymmetry=shape.width_asymmetry, n_bath_particles=shape.n_bath_particles
                        ).exact_populations(TEMPERATURE_KELVIN * unit.kelvin).left


def test_the_compound_states_are_the_tilted_double_wells():
    system = double_well_with_tilt_parameter()
    x = np.random.default_rng(0).normal(0.0, 0.4, (5, 4, 3))
    for state, tilt in zip(ladder(system), TILTS):
        context = state.create_context(openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        reference = DoubleWell2D(barrier_height=70.0 * unit.kilojoule_per_mole, tilt=tilt * unit.kilojoule_per_mole,
                                 width_asymmetry=system.width_asymmetry, n_bath_particles=system.n_bath_particles)
        for positions in x:
            context.setPositions(positions)
            energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
            assert energy == pytest.approx(reference.potential_energy_kj_per_mol(positions)[0], rel=1e-10, abs=1e-8)
    conditioning = state_conditioning(ladder(system))
    assert conditioning.kind == LADDER_POSITION
    np.testing.assert_allclose(conditioning.kelvin, 300.0 * 2.0 ** (np.arange(4) / 3))
    temperatures = [states.ThermodynamicState(system.system, t * unit.kelvin) for t in (300.0, 400.0)]
    assert state_conditioning(temperatures) == state_conditioning(temperatures)  # a plain temperature ladder
    assert state_conditioning(temperatures).kind == TEMPERATURE and state_conditioning(temperatures).kelvin == (300.0, 400.0)
    mixed = [ladder(system)[0], states.CompoundThermodynamicState(
        states.ThermodynamicState(system.system, 400 * unit.kelvin), [TiltState(lambda_tilt=1.0)])]
    assert "vary either the temperature or the other parameters" in state_conditioning(mixed)
    settings = Settings.from_dict({})
    assert plain_replica_exchange_reason(ladder(system), settings, any_ladder=True) is None
    with_exchanges = Settings.from_dict({"proposals": {"exchange_pairs": [(0, 3)]}})
    assert "exchange_pairs" in plain_replica_exchange_reason(ladder(system), with_exchanges, any_ladder=True)


def left_share(storage, state_index, first_iteration):
    """P(left) of a state from ``first_iteration`` on, with its batch-means error (8 batches)."""
    reporter = multistate.MultiStateReporter(storage, open_mode="r")
    try:
        n_iterations = reporter.read_last_iteration(last_checkpoint=False)
        left = []
        for iteration in range(first_iteration + 1, n_iterations + 1):
            replica = int(np.flatnonzero(reporter.read_replica_thermodynamic_states(iteration) == state_index)[0])
            positions = reporter.read_sampler_states(iteration, analysis_particles_only=True)[replica].positions
            left.append(float(positions.value_in_unit(unit.nanometer)[0, 0] < 0.0))
    finally:
        reporter.close()
    return double_well.left_estimate(np.where(left, 0, 1), 0)  # wells: 0 left, 1 right


@pytest.mark.slow
def test_proposals_on_a_ladder_at_one_temperature_reach_the_exact_population(tmp_path):
    torch.set_num_threads(1)
    cache.global_context_cache.empty()
    cache.global_context_cache.platform = openmm.Platform.getPlatformByName("Reference")
    system = double_well_with_tilt_parameter()
    storage = str(tmp_path / "ladder.nc")
    sampler = DDPMReplicaExchangeSampler(
        number_of_iterations=N_ITERATIONS, online_analysis_interval=None,
        model=dict(width=64, depth=2, n_steps=20), dynamics=double_well.DYNAMICS,
        training=dict(train_steps=40, min_buffer_frames=200),
        proposals=dict(target_states=[0], n_candidates=8, min_training_steps=200), seed=1, freeze_after=FREEZE_AFTER)
    reporter = multistate.MultiStateReporter(storage, checkpoint_interval=10, analysis_particle_indices=[0])
    sampler_states = [states.SamplerState(system.minimum_positions(w)) for w in double_well.STARTING_WELLS]
    sampler.create(ladder(system), sampler_states, reporter)
    assert sampler.plain_reason is None and sampler.conditioning.kind == LADDER_POSITION
    sampler.run()
    reporter.close()
    first = FREEZE_AFTER + BURN_IN
    n_samples = N_ITERATIONS - first
    for state_index in (0,):
        exact = exact_left(TILTS[state_index])
        estimate, error = left_share(storage, state_index, first)
        print(f"state {state_index}: exact {exact:.3f}, augmented {estimate:.3f} +- {error:.3f}")
        # error floored at that of independent samples, as in test_sampler_proof (batch means over 8 batches is noisy)
        assert abs(estimate - exact) < 4 * max(error, np.sqrt(exact * (1 - exact) / n_samples))
    assert abs(0.25 - exact_left(TILTS[0])) > 0.4  # state 0 without proposals: one left configuration of four

    # exported, the model says what it is conditioned on, and refuses to be drawn at a temperature
    export_proposal_model(sampler.learner, str(tmp_path / "model.pt"), sampler.iteration)
    exported = load_exported_model(str(tmp_path / "model.pt"), system.system)
    assert exported.conditioning == LADDER_POSITION
    with pytest.raises(ValueError, match="conditioned on its ladder position"):
        generate_with_densities(exported, system.system, 300 * unit.kelvin, 4, system.minimum_positions(0))

    # negative control: the frozen model's independence chain at state 0, weighted with state 3's reduced potential
    model = sampler.learner.proposal_for(0).model
    wrong = right = 0.0
    states_ = ladder(system)
    for target, weights_from in ((0, 0), (0, 3)):
        move = GenerativeProposal(model, n_candidates=8, random_state=5, condition=sampler.conditioning.of(target))
        sampler_state = states.SamplerState(system.minimum_positions(1))
        left = []
        for _ in range(400):
            move.apply(states_[weights_from], sampler_state)
            left.append(sampler_state.positions.value_in_unit(unit.nanometer)[0, 0] < 0.0)
        share = float(np.mean(left[50:]))
        if weights_from == 0:
            right = share
        else:
            wrong = share
    print(f"independence chain at state 0: {right:.3f} (exact {exact_left(TILTS[0]):.3f}); with state 3's weights "
          f"{wrong:.3f} (state 3 exact {exact_left(TILTS[3]):.3f})")
    assert abs(right - exact_left(TILTS[0])) < 0.1  # 350 draws of a seeded independence chain at ESS ~ 0.5: sd ~ 0.035
    assert abs(wrong - exact_left(TILTS[3])) < 0.1 and abs(wrong - exact_left(TILTS[0])) > 0.2


@pytest.mark.slow
def test_openmm_sampler_proposes_on_a_ladder_of_global_parameters():
    """The same ladder in OpenMM's own app.ReplicaExchangeSampler: states as dicts of the global parameter."""
    import random

    from openmm_ddpm.multistate import DDPMOpenMMReplicaExchangeSampler
    from test_openmm_sampler import run_and_record, simulation_of

    torch.set_num_threads(1)
    system = double_well_with_tilt_parameter()
    openmm_states = [{"lambda_tilt": tilt - TILTS[0]} for tilt in TILTS]
    random.seed(3)  # OpenMM's exchanges
    sampler = DDPMOpenMMReplicaExchangeSampler(
        openmm_states, simulation_of(system, 4), 500, model=dict(width=64, depth=2, n_steps=20),
        training=dict(train_steps=40, min_buffer_frames=200), dynamics=dict(stream_stride=25),
        proposals=dict(target_states=[0], n_candidates=8, min_training_steps=200), freeze_after=60, seed=1)
    assert sampler.plain_reason is None and sampler.conditioning.kind == LADDER_POSITION
    x = system.minimum_positions(0)
    for state, tilt in zip(sampler._thermodynamic_states, TILTS):  # each state's System has its tilt
        context = state.create_context(openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        context.setPositions(x)
        energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        reference = DoubleWell2D(barrier_height=70.0 * unit.kilojoule_per_mole, tilt=tilt * unit.kilojoule_per_mole,
                                 width_asymmetry=system.width_asymmetry, n_bath_particles=system.n_bath_particles)
        assert energy == pytest.approx(reference.potential_energy_kj_per_mol(np.asarray(x))[0], rel=1e-10)
    wells = run_and_record(sampler, system, 240)
    left = (wells[90:] == 0).astype(float)
    estimate, error = left.mean(), batch_means_standard_error(left, n_batches=8)
    exact = exact_left(TILTS[0])
    print(f"OpenMM sampler, tilt ladder, state 0: exact {exact:.3f}, with proposals {estimate:.3f} +- {error:.3f}")
    assert abs(estimate - exact) < 4 * max(error, np.sqrt(exact * (1 - exact) / len(left)))
    assert sum(s.n_accepted for s in sampler.iteration_statistics if s.phase == 1) > 20
    mixed = [{"temperature": 300 * unit.kelvin, "lambda_tilt": 0.0}, {"temperature": 400 * unit.kelvin, "lambda_tilt": 1.0}]
    with pytest.warns(UserWarning, match="vary either the temperature or the other parameters"):
        assert DDPMOpenMMReplicaExchangeSampler(mixed, simulation_of(system, 5), 10).learner is None
