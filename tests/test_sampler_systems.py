"""The drop-in samplers on the Systems users run: HBonds constraints get proposals; what cannot, runs as plain RE.

The physics of the constrained proposals (the mass-metric factor, the
angle distribution of a rigid triatomic) is tested in test_constraints;
here: that a swapped-in class runs every setup its parent runs.
"""
import warnings

import numpy as np
import openmm
import pytest
from openmm import unit
from openmmtools import cache, multistate, states, testsystems

from openmm_ddpm.coordinates.constraints import ConstrainedCoordinates, system_constraints
from openmm_ddpm.multistate import DDPMParallelTemperingSampler, DDPMReplicaExchangeSampler, read_ddpm_statistics
from openmm_ddpm.testsystems import DoubleWell2D

TINY = dict(
    model=dict(width=32, depth=1, n_steps=4),
    training=dict(train_steps=5, min_buffer_frames=10, batch_size=32),
    dynamics=dict(n_steps=50, stream_stride=25),
    proposals=dict(min_training_steps=5, n_candidates=2),
    seed=2,
)


@pytest.fixture(autouse=True)
def single_thread_cpu_platform():
    platform = openmm.Platform.getPlatformByName("CPU")
    platform.setPropertyDefaultValue("Threads", "1")
    cache.global_context_cache.empty()
    cache.global_context_cache.platform = platform
    yield
    cache.global_context_cache.empty()


def test_an_hbonds_script_gets_exact_proposals(tmp_path):
    """Alanine dipeptide in implicit solvent with constraints=HBonds, as in openmmtools' parallel-tempering scripts."""
    molecule = testsystems.AlanineDipeptideImplicit(constraints=openmm.app.HBonds)
    storage = str(tmp_path / "run.nc")
    sampler = DDPMParallelTemperingSampler(number_of_iterations=6, online_analysis_interval=None, **TINY)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*plain replica exchange.*")
        sampler.create(states.ThermodynamicState(molecule.system, 300 * unit.kelvin), states.SamplerState(molecule.positions),
                       multistate.MultiStateReporter(storage, checkpoint_interval=3),
                       temperatures=[300.0, 450.0] * unit.kelvin)
        sampler.run()
    assert sampler.plain_reason is None
    coordinates = sampler.learner.representation.coordinates
    assert isinstance(coordinates, ConstrainedCoordinates) and coordinates.n_features == 3 * 22 - 6 - 12
    assert np.nansum(read_ddpm_statistics(storage)["ddpm_n_candidates"]) > 0
    for sampler_state in sampler.sampler_states:  # MD and proposals both keep the constraints
        positions = sampler_state.positions.value_in_unit(unit.nanometer)
        for a, b, length in system_constraints(molecule.system):
            assert abs(np.linalg.norm(positions[a] - positions[b]) - length) < 1e-4 * length


def test_a_periodic_system_runs_as_plain_replica_exchange_with_one_warning(tmp_path):
    water = testsystems.WaterBox(box_edge=1.3 * unit.nanometer, cutoff=0.6 * unit.nanometer)
    sampler = DDPMParallelTemperingSampler(number_of_iterations=2, online_analysis_interval=None, **TINY)
    with pytest.warns(UserWarning, match="plain replica exchange: the System is periodic"):
        sampler.create(states.ThermodynamicState(water.system, 300 * unit.kelvin), states.SamplerState(water.positions,
                       box_vectors=water.system.getDefaultPeriodicBoxVectors()),
                       multistate.MultiStateReporter(str(tmp_path / "water.nc")), temperatures=[300.0, 330.0] * unit.kelvin)
    sampler.run()
    assert sampler.iteration == 2 and sampler.learner is None and "periodic" in sampler.plain_reason


def test_states_that_differ_in_temperature_and_beyond_run_as_plain_replica_exchange(tmp_path):
    system, other = DoubleWell2D(), DoubleWell2D(tilt=1.0 * unit.kilojoule_per_mole)
    sampler_state = states.SamplerState(system.positions)
    good = [states.ThermodynamicState(system.system, t * unit.kelvin) for t in (300, 450)]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*plain replica exchange.*")
        DDPMReplicaExchangeSampler(number_of_iterations=1).create(good, sampler_state,
                                                                  multistate.MultiStateReporter(str(tmp_path / "a.nc")))
    bad = [states.ThermodynamicState(system.system, 300 * unit.kelvin), states.ThermodynamicState(other.system, 450 * unit.kelvin)]
    sampler = DDPMReplicaExchangeSampler(number_of_iterations=2, **TINY)
    with pytest.warns(UserWarning, match="differ in temperature and in more than temperature"):
        sampler.create(bad, sampler_state, multistate.MultiStateReporter(str(tmp_path / "b.nc")))
    sampler.run()
    assert sampler.iteration == 2 and sampler.learner is None
