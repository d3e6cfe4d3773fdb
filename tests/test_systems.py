"""DoubleWell2D: energies, exact populations, and the barrier."""
import numpy as np
import openmm
import pytest
from openmm import unit
from scipy import integrate

from openmm_ddpm.testsystems import DoubleWell2D
from openmm_ddpm.units import kt_kj_per_mol


def test_openmm_energy_matches_analytic_expression(double_well):
    context = openmm.Context(
        double_well.system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )
    for point in np.random.default_rng(0).normal(0.0, 0.6, size=(20, 1, 3)):
        context.setPositions(point)
        energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        assert energy == pytest.approx(double_well.potential_energy_kj_per_mol(point)[0], rel=1e-10, abs=1e-10)


def test_exact_populations_match_two_dimensional_quadrature(double_well):
    """Integrating y out analytically (the shortcut) agrees with a 2-D quadrature."""
    temperature = 300.0 * unit.kelvin
    kt = kt_kj_per_mol(temperature)
    offset = double_well.potential_energy_kj_per_mol([[-0.5, -0.25, 0.0]])[0]

    def density(y, x):
        return np.exp(-(double_well.potential_energy_kj_per_mol([[x, y, 0.0]])[0] - offset) / kt)

    left, _ = integrate.dblquad(density, -1.5, 0.0, lambda x: 0.5 * x - 1.0, lambda x: 0.5 * x + 1.0, epsabs=1e-12)
    right, _ = integrate.dblquad(density, 0.0, 1.5, lambda x: 0.5 * x - 1.0, lambda x: 0.5 * x + 1.0, epsabs=1e-12)
    populations = double_well.exact_populations(temperature)
    assert populations.left == pytest.approx(left / (left + right), abs=1e-6)
    assert 0.88 < populations.left < 0.92  # the ~90/10 the tests rely on


def test_populations_approach_half_at_high_temperature(double_well):
    lefts = [double_well.exact_populations(t * unit.kelvin).left for t in (300, 600, 1200, 1e5)]
    assert all(a > b for a, b in zip(lefts, lefts[1:]))
    assert lefts[-1] == pytest.approx(0.5, abs=0.01)


def test_langevin_does_not_cross_the_barrier_at_300k_in_a_million_steps(double_well):
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1.0 / unit.picosecond, 2.0 * unit.femtosecond)
    integrator.setRandomNumberSeed(11)
    context = openmm.Context(double_well.system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(double_well.minimum_positions(0))
    context.setVelocitiesToTemperature(300 * unit.kelvin, 11)
    largest_x = -np.inf
    for _ in range(10000):
        integrator.step(100)
        x = context.getState(getPositions=True).getPositions(asNumpy=True)[0, 0].value_in_unit(unit.nanometer)
        largest_x = max(largest_x, x)
    assert largest_x < -0.1  # never near the barrier top at x = 0


def test_md_samples_stay_in_their_well_and_have_the_thermal_spread(double_well):
    frames = double_well.sample_well_by_md(300 * unit.kelvin, 1, 2000, stride_steps=50, seed=3)
    assert np.all(double_well.well_index(frames) == 1)
    # harmonic in z: <z^2> = kT / k_z
    expected = kt_kj_per_mol(300 * unit.kelvin) / double_well.spring_constant_z
    assert np.mean(frames[:, 0, 2] ** 2) == pytest.approx(expected, rel=0.15)


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match="barrier_height"):
        DoubleWell2D(barrier_height=-1.0 * unit.kilojoule_per_mole)
    with pytest.raises(ValueError, match="well must be"):
        DoubleWell2D().minimum_positions(2)
    with pytest.raises(ValueError, match="temperature"):
        DoubleWell2D().exact_populations(0.0 * unit.kelvin)
