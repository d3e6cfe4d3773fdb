"""A solute moved with the rest held: exact for the conditional pi(solute | rest), periodic Systems included.

The rigid triatomic of test_constraints plus one held particle H that pulls
on atom C (a harmonic C-H distance), in a periodic box. With the frame of
the move fixed (A, the direction A->B, the plane of A, B, C), C's position
is a function of the angle alone, so the conditional angle density is, by
quadrature,

    p(theta | H) ~ exp(-(U_angle + U_CH(theta)) / kT) sin(theta) sqrt(det Z(theta)),

mean 1.181 rad against 1.072 without H: the chain must find the first.
"""
import numpy as np
import openmm
import pytest
from openmm import unit
from openmmtools import cache, states

from openmm_ddpm.moves import GenerativeProposal, HeldSolventModel
from test_constraints import (
    BOND,
    K_ANGLE,
    KT,
    MASSES,
    THETA0,
    UniformAngleModel,
    angle_of,
    batch_mean,
    triatomic,
    triatomic_coordinates,
    triatomic_positions,
)

HELD = np.array([-0.05, 0.15, 0.0])  # nm
K_PULL, LENGTH = 2000.0, 0.08  # kJ/mol/nm^2, nm
BOX = 3.0  # nm


def solvated_triatomic():
    """The triatomic, a held particle H bound to C, and a periodic box (a zero-strength periodic nonbonded force)."""
    system = triatomic()
    system.addParticle(16.0)
    pull = openmm.CustomBondForce("0.5*k_pull*(r-r0)^2")
    pull.addGlobalParameter("k_pull", K_PULL)
    pull.addGlobalParameter("r0", LENGTH)
    pull.addBond(2, 3, [])
    system.addForce(pull)
    periodic = openmm.NonbondedForce()
    periodic.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    periodic.setCutoffDistance(1.0)
    for _ in range(4):
        periodic.addParticle(0.0, 0.3, 0.0)
    system.addForce(periodic)
    system.setDefaultPeriodicBoxVectors(*(np.eye(3) * BOX))
    return system


def held_quadrature_mean_angle():
    theta = np.linspace(1e-6, np.pi - 1e-6, 200_001)
    c = BOND * np.stack([np.cos(theta), np.sin(theta), np.zeros_like(theta)], axis=-1)
    energy = 0.5 * K_ANGLE * (theta - THETA0) ** 2 + 0.5 * K_PULL * (np.linalg.norm(c - HELD, axis=-1) - LENGTH) ** 2
    m_a, m_b, m_c = MASSES
    density = np.exp(-energy / KT) * np.sin(theta) * np.sqrt((1 / m_a + 1 / m_b) * (1 / m_c + 1 / m_b) - np.cos(theta) ** 2 / m_b**2)
    return float(np.sum(theta * density) / np.sum(density))


def test_held_solvent_moves_sample_the_conditional_of_the_solute():
    """8,000 moves (K = 4) with H held in a periodic box: mean angle within 4 standard errors of the conditional
    quadrature (1.181 rad), and more than 4 away from the solute's own distribution (1.072 rad); H never moves."""
    model = HeldSolventModel(UniformAngleModel(triatomic_coordinates()), solute_atoms=[0, 1, 2])
    proposal = GenerativeProposal(model, n_candidates=4, random_state=6)
    box = np.eye(3) * BOX * unit.nanometer
    thermodynamic_state = states.ThermodynamicState(solvated_triatomic(), 300 * unit.kelvin)
    sampler_state = states.SamplerState(np.vstack([triatomic_positions(THETA0), HELD]) * unit.nanometer, box_vectors=box)
    context_cache = cache.ContextCache(platform=openmm.Platform.getPlatformByName("Reference"))
    angles = []
    for _ in range(8000):
        proposal.apply(thermodynamic_state, sampler_state, context_cache)
        angles.append(angle_of(sampler_state.positions.value_in_unit(unit.nanometer)[:3]))
    positions = sampler_state.positions.value_in_unit(unit.nanometer)
    assert np.array_equal(positions[3], HELD)
    mean, error = batch_mean(angles)
    assert proposal.statistics.acceptance_rate > 0.2
    assert abs(mean - held_quadrature_mean_angle()) < 4 * error
    from test_constraints import quadrature_mean_angle

    assert abs(mean - quadrature_mean_angle(True)) > 4 * error


def test_what_a_held_solvent_move_may_touch():
    """Periodic is fine with the rest held; a molecule only partly moved is not (its constraints cross the cut)."""
    system = solvated_triatomic()
    model = HeldSolventModel(UniformAngleModel(triatomic_coordinates()), solute_atoms=[0, 1])
    proposal = GenerativeProposal(model, random_state=0)
    sampler_state = states.SamplerState(np.vstack([triatomic_positions(THETA0), HELD]) * unit.nanometer,
                                        box_vectors=np.eye(3) * BOX * unit.nanometer)
    with pytest.raises(ValueError, match="partly moved"):
        proposal.apply(states.ThermodynamicState(system, 300 * unit.kelvin), sampler_state,
                       cache.ContextCache(platform=openmm.Platform.getPlatformByName("Reference")))
