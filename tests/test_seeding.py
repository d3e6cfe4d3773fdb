"""One seed reproduces a run: the streams it spawns, and a whole seeded sampler run done twice."""
import numpy as np
import openmm
import pytest
import torch
from openmm import unit
from openmmtools import cache, multistate, states

from openmm_ddpm.multistate import DDPMParallelTemperingSampler, read_ddpm_statistics
from openmm_ddpm.seeding import (
    integer_seed,
    numpy_generator,
    seed_replica_mixing,
    seed_sequence,
)
from openmm_ddpm.testsystems import DoubleWell2D


def test_streams_are_reproducible_distinct_and_in_range():
    assert numpy_generator(7, "proposal", 0).random() == numpy_generator(7, "proposal", 0).random()
    draws = {(p, k): numpy_generator(7, p, k).random() for p in ("proposal", "relabel", "mixing") for k in (0, 1)}
    assert len(set(draws.values())) == len(draws)  # every purpose and key its own stream
    assert numpy_generator(8, "proposal", 0).random() != draws[("proposal", 0)]
    seeds = [integer_seed(s, "dynamics") for s in range(200)]
    assert all(1 <= s < 2**31 for s in seeds) and len(set(seeds)) == 200  # OpenMM reads 0 as 'pick one'
    with pytest.raises(ValueError, match="unknown random stream"):
        seed_sequence(0, "weather")
    with pytest.raises(ValueError, match="non-negative integer"):
        seed_sequence(-1, "network")


def test_replica_mixing_generators_are_seeded():
    """openmmtools mixes replicas with the global numpy generator and numba's own; both follow the seed."""
    from openmmtools.multistate.replicaexchange import ReplicaExchangeSampler

    mix = ReplicaExchangeSampler._mix_all_replicas_numba
    energies = np.random.default_rng(0).normal(size=(5, 5)) * 3.0

    def swaps(seed, iteration):
        seed_replica_mixing(seed, iteration)
        replicas = np.arange(5)
        accepted, proposed = np.zeros((5, 5)), np.zeros((5, 5))
        mix(200, 5, replicas, energies, accepted, proposed)
        return replicas.copy(), np.random.random()

    first, again, other = swaps(3, 10), swaps(3, 10), swaps(3, 11)
    assert np.array_equal(first[0], again[0]) and first[1] == again[1]
    assert not (np.array_equal(first[0], other[0]) and first[1] == other[1])


def seeded_run(storage, seed, platform="CPU"):
    """A short augmented run; on the CPU platform with one thread (the same sums in the same order every time)."""
    torch.set_num_threads(1)
    cache.global_context_cache.empty()
    properties = {"Threads": "1"} if platform == "CPU" else None
    cache.global_context_cache.set_platform(openmm.Platform.getPlatformByName(platform), properties)
    system = DoubleWell2D()
    sampler = DDPMParallelTemperingSampler(
        number_of_iterations=12, freeze_after=8, online_analysis_interval=None, seed=seed,
        model=dict(width=32, depth=1, n_steps=6), training=dict(train_steps=10, min_buffer_frames=40, batch_size=64),
        proposals=dict(min_training_steps=40, n_candidates=4), dynamics=dict(n_steps=200, stream_stride=50))
    sampler.create(states.ThermodynamicState(system.system, 300 * unit.kelvin),
                   states.SamplerState(system.minimum_positions(1)), multistate.MultiStateReporter(storage),
                   temperatures=[300.0, 500.0, 900.0] * unit.kelvin)
    sampler.run()
    weights = {k: v.clone() for k, v in sampler.learner.trainer.ema_network.state_dict().items()}
    positions = np.array([s.positions.value_in_unit(unit.nanometer) for s in sampler.sampler_states])
    replica_states = np.array(sampler._replica_thermodynamic_states)
    del sampler
    cache.global_context_cache.empty()
    cache.global_context_cache.set_platform(openmm.Platform.getPlatformByName("Reference"))
    statistics = {k: v for k, v in read_ddpm_statistics(storage).items() if not k.endswith("_seconds")}
    return statistics, weights, positions, replica_states


@pytest.mark.parametrize("platform", ["CPU", "Reference"])
def test_a_seeded_run_reproduces_its_statistics_weights_and_positions(tmp_path, platform):
    first = seeded_run(str(tmp_path / "a.nc"), seed=5, platform=platform)
    second = seeded_run(str(tmp_path / "b.nc"), seed=5, platform=platform)
    other = seeded_run(str(tmp_path / "c.nc"), seed=6, platform=platform)
    statistics, weights, positions, replica_states = first
    assert np.nansum(statistics["ddpm_n_candidates"]) > 0  # proposals happened, so their randomness is covered
    for name, values in statistics.items():
        np.testing.assert_array_equal(values, second[0][name], err_msg=name)
    for key, value in weights.items():
        assert torch.equal(value, second[1][key]), key
    np.testing.assert_array_equal(positions, second[2])
    np.testing.assert_array_equal(replica_states, second[3])
    # the negative control: another seed gives another run
    assert not np.array_equal(positions, other[2])
    assert any(not torch.equal(value, other[1][key]) for key, value in weights.items())
