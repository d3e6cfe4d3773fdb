"""Velocities at a swap of temperatures: rescaled by sqrt(T_new / T_old), so the swap stays exact on (x, v).

The swap's acceptance uses potential energies only; it keeps the joint
distribution pi_T(x) N(v; 0, kT/m) when the velocities go from the
Maxwell-Boltzmann distribution at T_old to the one at T_new, which the
scaling does exactly: a replica's kinetic energy in units of its own kT is
unchanged, and over a permutation of temperatures the scaling Jacobians
multiply to 1.
"""
import numpy as np
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
