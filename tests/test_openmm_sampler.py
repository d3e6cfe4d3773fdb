"""OpenMM's own replica-exchange sampler with our proposals, against the exact answer of the double well.

The setup of openmm_ddpm.app.double_well (test_sampler_proof): no MD
barrier crossing at any temperature, one left-well configuration among four
replicas at the start. OpenMM's plain ``app.ReplicaExchangeSampler`` only
permutes configurations and cannot reach the exact 300 K population; the
subclass's exact proposals can.
"""
import random

import numpy as np
import openmm
import pytest
import torch
from openmm import app, unit

from openmm_ddpm.analysis import batch_means_standard_error
from openmm_ddpm.app import double_well as example
from openmm_ddpm.multistate import DDPMOpenMMReplicaExchangeSampler

N_ITERATIONS, FREEZE_AFTER, BURN_IN = 240, 60, 30
STATES = [{"temperature": t} for t in example.TEMPERATURES]


def simulation_of(system, seed):
    topology = app.Topology()
    residue = topology.addResidue("DW", topology.addChain())
    for _ in range(system.system.getNumParticles()):
        topology.addAtom("X", None, residue)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond)
    integrator.setRandomNumberSeed(seed)
    simulation = app.Simulation(topology, system.system, integrator, openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(system.minimum_positions(1))
    return simulation


def start_in_wells(sampler, system):
    """Replica i starts in well STARTING_WELLS[i] (the hottest in the left one), as in the proof."""
    context = sampler.simulation.context
    for replica, well in enumerate(example.STARTING_WELLS):
        context.setPositions(system.minimum_positions(well))
        context.setVelocitiesToTemperature(300 * unit.kelvin, replica + 1)
        sampler.replicaConformation[replica] = context.getState(positions=True, velocities=True, parameters=True,
                                                                integratorParameters=True)


def run_and_record(sampler, system, n_iterations):
    """P(left) at 300 K per iteration: the well of the replica at state 0 after its moves."""
    wells = []

    def record(s):
        replica = s.replicaStateIndex.index(0)
        wells.append(int(s.replicaConformation[replica].getPositions(asNumpy=True)[0][0].value_in_unit(unit.nanometer) >= 0))

    sampler.reporters.append(record)
    start_in_wells(sampler, system)
    sampler.simulate(n_iterations)
    return np.asarray(wells)


def left_estimate(wells):
    left = (wells[FREEZE_AFTER + BURN_IN:] == 0).astype(float)
    return left.mean(), batch_means_standard_error(left, n_batches=8)


@pytest.mark.slow
def test_openmm_sampler_with_proposals_is_exact_where_plain_openmm_replica_exchange_fails():
    torch.set_num_threads(1)
    system = example.make_system()
    exact = system.exact_populations(example.TEMPERATURES[0]).left
    random.seed(1)  # OpenMM's exchanges
    plain = app.ReplicaExchangeSampler(STATES, simulation_of(system, 1), 500)
    plain_left, plain_error = left_estimate(run_and_record(plain, system, N_ITERATIONS))
    random.seed(2)
    augmented = DDPMOpenMMReplicaExchangeSampler(
        STATES, simulation_of(system, 2), 500, model=dict(width=64, depth=2, n_steps=20),
        training=dict(train_steps=40, min_buffer_frames=200), dynamics=dict(stream_stride=25),
        proposals=dict(target_states=[0, 1], n_candidates=8, min_training_steps=200), freeze_after=FREEZE_AFTER, seed=1)
    left, error = left_estimate(run_and_record(augmented, system, N_ITERATIONS))
    statistics = augmented.iteration_statistics
    print(f"exact {exact:.3f}  plain OpenMM {plain_left:.3f}+-{plain_error:.3f}  with proposals {left:.3f}+-{error:.3f}")
    # error floored at that of independent samples, as in test_sampler_proof (batch means over 8 batches is noisy)
    n_samples = N_ITERATIONS - FREEZE_AFTER - BURN_IN
    assert abs(left - exact) < 4 * max(error, np.sqrt(exact * (1 - exact) / n_samples))
    assert abs(plain_left - exact) > 4 * max(plain_error, 0.02)
    assert sum(s.n_accepted for s in statistics if s.phase == 1) > 20
    assert [s.phase for s in statistics] == [0] * FREEZE_AFTER + [1] * (N_ITERATIONS - FREEZE_AFTER)


def test_a_hamiltonian_ladder_runs_as_plain_openmm_replica_exchange():
    system = example.make_system()
    states = [{"temperature": 300 * unit.kelvin, "groups": {0: scale}} for scale in (1.0, 0.5)]
    with pytest.warns(UserWarning, match="plain replica exchange: state 0 sets groups"):
        sampler = DDPMOpenMMReplicaExchangeSampler(states, simulation_of(system, 3), 10)
    sampler.simulate(2)
    assert sampler.learner is None and sampler.plain_reason is not None
    with pytest.raises(ValueError, match="exchange_pairs"):
        DDPMOpenMMReplicaExchangeSampler(STATES, simulation_of(system, 3), 10, proposals=dict(exchange_pairs=[(0, 1)]))
    with pytest.raises(ValueError, match="target state 7"):
        DDPMOpenMMReplicaExchangeSampler(STATES, simulation_of(system, 3), 10, proposals=dict(target_states=[7]))


def test_streamed_frames_and_the_learning_state_round_trip(tmp_path):
    """Two frames per replica and iteration at stride 5 of 10 steps; the saved learning state restores the buffer."""
    system = example.make_system()
    sampler = DDPMOpenMMReplicaExchangeSampler(STATES, simulation_of(system, 4), 10, dynamics=dict(stream_stride=5),
                                               training=dict(min_buffer_frames=10**6))
    sampler.simulate(3)
    assert len(sampler.learner.buffer) == 3 * 4 * 2
    positions, kelvins = sampler.learner.buffer.arrays()
    assert sorted(set(np.round(kelvins, 3))) == [300.0, 475.0, 750.0, 1200.0]
    digest = sampler.save_learning_state(str(tmp_path / "learning.pt"))
    other = DDPMOpenMMReplicaExchangeSampler(STATES, simulation_of(system, 5), 10, training=dict(min_buffer_frames=10**6))
    other.load_learning_state(str(tmp_path / "learning.pt"), digest)
    assert np.array_equal(other.learner.buffer.arrays()[0], positions)
