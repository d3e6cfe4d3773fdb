"""Velocities at a swap of temperatures: rescaled by sqrt(T_new / T_old), so the swap stays exact on (x, v).

The swap's acceptance uses potential energies only; it keeps the joint
distribution pi_T(x) N(v; 0, kT/m) when the velocities go from the
Maxwell-Boltzmann distribution at T_old to the one at T_new, which the
scaling does exactly: a replica's kinetic energy in units of its own kT is
unchanged, and over a permutation of temperatures the scaling Jacobians
multiply to 1.
"""
import os
import tempfile

import numpy as np
import pytest
from openmm import unit
from openmmtools import states

from openmm_ddpm.multistate.velocities import rescale_swapped_velocities
from openmm_ddpm.testsystems import DoubleWell2D

KELVINS = (300.0, 382.0, 486.0)


def kinetic_energy_over_kt(sampler_state, masses, kelvin):
    v = sampler_state.velocities.value_in_unit(unit.nanometer / unit.picosecond)
    kt = (unit.MOLAR_GAS_CONSTANT_R * kelvin * unit.kelvin).value_in_unit(unit.kilojoule_per_mole)
    return 0.5 * np.sum(masses[:, None] * v**2) / kt


def test_swapped_replicas_keep_their_kinetic_energy_in_units_of_their_own_kt():
    system = DoubleWell2D(n_bath_particles=3)
    masses = np.array([system.system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(4)])
    thermodynamic_states = [states.ThermodynamicState(system.system, t * unit.kelvin) for t in KELVINS]
    rng = np.random.default_rng(0)
    sampler_states = []
    for kelvin in KELVINS:  # replica r at state r, Maxwell-Boltzmann at its temperature
        kt = (unit.MOLAR_GAS_CONSTANT_R * kelvin * unit.kelvin).value_in_unit(unit.kilojoule_per_mole)
        velocities = rng.standard_normal((4, 3)) * np.sqrt(kt / masses)[:, None]
        sampler_states.append(states.SamplerState(system.positions, velocities=velocities * unit.nanometer / unit.picosecond))
    before = [kinetic_energy_over_kt(s, masses, t) for s, t in zip(sampler_states, KELVINS)]
    kept = sampler_states[2].velocities.copy()
    after_states = [1, 0, 2]  # replicas 0 and 1 swap; replica 2 stays
    assert rescale_swapped_velocities(sampler_states, thermodynamic_states, [0, 1, 2], after_states) == 2
    after = [kinetic_energy_over_kt(s, masses, KELVINS[k]) for s, k in zip(sampler_states, after_states)]
    assert np.allclose(after, before, rtol=1e-12)
    assert np.array_equal(sampler_states[2].velocities, kept)
    # the Jacobian of the scaling over the permutation: (T1/T0)^(3N/2) (T0/T1)^(3N/2) = 1
    ratios = [KELVINS[new] / KELVINS[old] for old, new in zip([0, 1, 2], after_states)]
    assert np.isclose(np.prod(ratios), 1.0)


def test_replicas_without_velocities_are_left_alone():
    system = DoubleWell2D()
    thermodynamic_states = [states.ThermodynamicState(system.system, t * unit.kelvin) for t in KELVINS[:2]]
    sampler_states = [states.SamplerState(system.positions) for _ in range(2)]
    assert rescale_swapped_velocities(sampler_states, thermodynamic_states, [0, 1], [1, 0]) == 0


def kinetic_energies_at_300k(rescale, n_iterations, seed=3):
    """KE / kT of the replica at 300 K after each iteration's MD, parallel tempering seeded throughout (Reference)."""
    import openmm
    from openmmtools import cache, multistate

    from openmm_ddpm.app.double_well import SeededParallelTemperingSampler
    from openmm_ddpm.moves.streaming import SeededLangevinDynamicsMove
    from openmm_ddpm.multistate.velocities import RescaledSwapsMixin

    class Rescaling(RescaledSwapsMixin, SeededParallelTemperingSampler):
        pass

    cache.global_context_cache.empty()
    cache.global_context_cache.platform = openmm.Platform.getPlatformByName("Reference")
    system = DoubleWell2D(n_bath_particles=3)
    masses = np.array([system.system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(4)])
    # 20 steps of 0.5 fs: the thermostat (1/ps) removes 1 % of an excess per iteration, so what a swap does shows
    move = SeededLangevinDynamicsMove(timestep=0.5 * unit.femtosecond, collision_rate=1.0 / unit.picosecond, n_steps=20,
                                      reassign_velocities=False, random_seed=seed)
    sampler = (Rescaling if rescale else SeededParallelTemperingSampler)(
        seed, mcmc_moves=move, number_of_iterations=n_iterations, online_analysis_interval=None)
    kelvins = (300.0, 340.0, 385.0, 436.0)
    rng = np.random.default_rng(seed)
    sampler_states = []
    for kelvin in kelvins:  # Maxwell-Boltzmann at each replica's own temperature to start
        kt = (unit.MOLAR_GAS_CONSTANT_R * kelvin * unit.kelvin).value_in_unit(unit.kilojoule_per_mole)
        velocities = rng.standard_normal((4, 3)) * np.sqrt(kt / masses)[:, None] * unit.nanometer / unit.picosecond
        sampler_states.append(states.SamplerState(system.minimum_positions(0), velocities=velocities))
    reporter = multistate.MultiStateReporter(os.path.join(tempfile.mkdtemp(), "pt.nc"), checkpoint_interval=1000)
    sampler.create(states.ThermodynamicState(system.system, kelvins[0] * unit.kelvin), sampler_states, reporter,
                   temperatures=[k * unit.kelvin for k in kelvins], n_temperatures=len(kelvins))
    energies = []
    for _ in range(n_iterations):
        sampler.run(1)
        replica = int(np.flatnonzero(sampler._replica_thermodynamic_states == 0)[0])
        energies.append(kinetic_energy_over_kt(sampler._sampler_states[replica], masses, kelvins[0]))
    reporter.close()
    return np.array(energies)


@pytest.mark.slow
def test_rescaled_swaps_keep_the_300k_kinetic_energy_at_equipartition_and_kept_velocities_heat_it():
    """<KE / kT> at 300 K is 3N/2 = 6 for 4 particles; with velocities kept at a swap it comes out higher.

    Error floor: batch means over 20 batches of 300 of 6,000 correlated samples
    (batch length >> the KE's correlation of ~100 iterations, the
    thermostat's 1 ps); the 4-sigma bands would fail 6e-5 of independent
    runs, and the run is seeded, so it gives the same numbers every time.
    """
    from openmm_ddpm.analysis import batch_means_standard_error

    rescaled = kinetic_energies_at_300k(rescale=True, n_iterations=6000)
    kept = kinetic_energies_at_300k(rescale=False, n_iterations=6000)
    rescaled_error = batch_means_standard_error(rescaled, n_batches=20)
    kept_error = batch_means_standard_error(kept, n_batches=20)
    print(f"<KE/kT> at 300 K: rescaled {rescaled.mean():.3f} +- {rescaled_error:.3f}, kept {kept.mean():.3f} "
          f"+- {kept_error:.3f}, equipartition 6")
    assert abs(rescaled.mean() - 6.0) < 4 * rescaled_error
    assert kept.mean() - 6.0 > 4 * kept_error  # negative control: without the scaling the 300 K replica runs hot
