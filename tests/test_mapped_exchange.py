"""The mapped replica exchange: the flow map's Jacobian, detailed balance, exact populations, negative control."""
import os

import numpy as np
import openmm
import pytest
import torch
from analytic import WarpedTemperatureMap
from openmm import unit
from openmmtools import cache, states, testsystems

from openmm_ddpm.analysis import batch_means_standard_error
from openmm_ddpm.coordinates import CartesianCoordinates, Representation, Standardizer
from openmm_ddpm.model import DiffusionProposalModel, EDMDiffusion
from openmm_ddpm.model.networks import ConditionedMLP
from openmm_ddpm.moves import StreamingLangevinMove
from openmm_ddpm.moves.mapped_exchange import MappedExchange
from openmm_ddpm.multistate import load_exported_model
from openmm_ddpm.settings import DiffusionSettings
from openmm_ddpm.testsystems import DoubleWell2D

COLD, HOT = 300.0 * unit.kelvin, 1200.0 * unit.kelvin
ALANINE_MODEL = os.path.join(os.path.dirname(__file__), "data", "alanine_dipeptide_vacuum_model.pt")


@pytest.fixture(scope="module")
def nonlinear_model():
    """Two atoms, centre of mass kept as the frame: 3 features through an untrained (nonlinear) network."""
    torch.manual_seed(3)
    coordinates = CartesianCoordinates(2, masses=[1.0, 3.0], remove_center_of_mass=True)
    representation = Representation(coordinates, Standardizer([0.1, 0.0, 0.0], [0.05, 0.05, 0.05]))
    network = ConditionedMLP(3, width=16, depth=2).double()
    with torch.no_grad():  # random weights everywhere (the output layer starts at zero), so the map depends on T
        for parameter in network.parameters():
            parameter.normal_(0.0, 0.5)
    return DiffusionProposalModel(EDMDiffusion(network, DiffusionSettings(n_steps=6)), representation)


def test_flow_map_jacobian_is_the_density_ratio(nonlinear_model):
    """|det dM/dx| = q(x | T_i) / q(M x | T_j), by central differences; M_ji o M_ij is the identity; the frame stays."""
    model, x = nonlinear_model, np.array([[[0.02, 0.01, -0.03], [0.13, -0.02, 0.04]]])
    mapped, valid, log_q_x = model.map_temperature(x, COLD, HOT)
    back, _, _ = model.map_temperature(mapped, HOT, COLD)
    assert valid.all() and np.allclose(back, x, atol=1e-9)
    masses = np.array([0.25, 0.75])
    assert np.allclose(np.einsum("a,nai->ni", masses, mapped), np.einsum("a,nai->ni", masses, x), atol=1e-12)
    # the map on the relative coordinate (the features up to the fixed standardization)
    def relative(positions):
        return positions[:, 1] - positions[:, 0]

    def from_relative(r):
        centre = masses @ x[0]
        return np.stack([centre - masses[1] * r, centre + masses[0] * r], axis=1)

    h, r0 = 1e-7, relative(x)[0]
    jacobian = np.empty((3, 3))
    for k in range(3):
        step = np.zeros(3)
        step[k] = h
        plus = relative(model.map_temperature(from_relative((r0 + step)[None]), COLD, HOT)[0])[0]
        minus = relative(model.map_temperature(from_relative((r0 - step)[None]), COLD, HOT)[0])[0]
        jacobian[:, k] = (plus - minus) / (2 * h)
    log_det = np.linalg.slogdet(jacobian)[1]
    log_q_mapped = model.log_prob(mapped, HOT)[0]
    assert log_det == pytest.approx(log_q_x[0] - log_q_mapped, abs=1e-6)
    assert abs(log_det) > 0.05  # the map is not volume preserving: the test can see a missing Jacobian


@pytest.fixture(scope="module")
def alanine():
    molecule = testsystems.AlanineDipeptideVacuum(constraints=None)
    return load_exported_model(ALANINE_MODEL, molecule.system), molecule


class WithoutRelabelling:
    """The model's map and density, without its random relabelling of methyl hydrogens (a separate exact move)."""

    def __init__(self, model):
        self.model = model

    def map_temperature(self, *args, **kwargs):
        return self.model.map_temperature(*args, **kwargs)

    def log_prob(self, positions, temperature):
        return self.model.log_prob(positions, temperature)


def test_mapped_exchange_is_reversible_on_alanine_dipeptide(alanine):
    """Detailed balance of the involution: from the offered pair the exchange offers the start back, at the opposite log ratio."""
    model, molecule = alanine
    context_cache = cache.ContextCache(platform=openmm.Platform.getPlatformByName("Reference"))
    thermodynamic_states = [states.ThermodynamicState(molecule.system, t) for t in (COLD, 400.0 * unit.kelvin)]
    rng = np.random.default_rng(1)
    start = molecule.positions.value_in_unit(unit.nanometer)
    x, y = model.relabel(np.stack([start, start + 0.003 * rng.normal(size=start.shape)]), rng)

    def exchange(pair):
        sampler_states = [states.SamplerState(unit.Quantity(p, unit.nanometer)) for p in pair]
        return MappedExchange(WithoutRelabelling(model), random_state=2).apply(thermodynamic_states, sampler_states,
                                                                              context_cache)

    forward = exchange((x, y))
    backward = exchange(forward.offered)
    assert np.isfinite(forward.log_acceptance) and abs(forward.log_acceptance) > 1e-3
    assert backward.log_acceptance == pytest.approx(-forward.log_acceptance, abs=1e-6)
    assert np.allclose(backward.offered, [x, y], atol=1e-8)
    assert not np.allclose(forward.offered, [y, x], atol=1e-3)  # the map changed the configurations


def exchange_chain(model, n_iterations, seed):
    """Langevin dynamics at 300 K and 1200 K on a double well (barrier 10 kT at 300 K) and a mapped exchange per iteration.

    Returns the well index at each state after every iteration, and the move.
    """
    system = DoubleWell2D(barrier_height=25.0 * unit.kilojoule_per_mole)
    context_cache = cache.ContextCache(platform=openmm.Platform.getPlatformByName("Reference"))
    thermodynamic_states = [states.ThermodynamicState(system.system, t) for t in (COLD, HOT)]
    sampler_states = [states.SamplerState(system.minimum_positions(w)) for w in (1, 0)]
    dynamics = StreamingLangevinMove(stream_stride=1000, n_steps=1000, timestep=2.0 * unit.femtosecond,
                                     collision_rate=1.0 / unit.picosecond, random_seed=seed)
    dynamics.recording = False
    move = MappedExchange(model, random_state=seed)
    wells = np.empty((n_iterations, 2), dtype=int)
    for i in range(n_iterations):
        for thermodynamic_state, sampler_state in zip(thermodynamic_states, sampler_states):
            dynamics.apply(thermodynamic_state, sampler_state, context_cache)
        move.apply(thermodynamic_states, sampler_states, context_cache)
        wells[i] = [system.well_index(s.positions.value_in_unit(unit.nanometer))[0] for s in sampler_states]
    return system, wells, move


def left_populations(system, wells):
    """(estimate, batch-means error, exact) of the left well at 300 K and 1200 K."""
    rows = []
    for k, temperature in enumerate((COLD, HOT)):
        left = (wells[:, k] == 0).astype(float)
        rows.append((left.mean(), batch_means_standard_error(left), system.exact_populations(temperature).left))
    return rows


def test_mapped_exchange_gives_exact_populations_on_the_double_well():
    """Plain MD at 300 K never crosses the barrier; the mapped exchange with 1200 K carries it, to the exact populations.

    The map squeezes one well and widens the other (``WarpedTemperatureMap``), so its Jacobian
    matters. 4 sigma bands: a false failure ~1e-4 per state; the run is seeded and reproducible.
    """
    system, wells, move = exchange_chain(WarpedTemperatureMap(warp=0.45), 2000, seed=11)
    for estimate, error, exact in left_populations(system, wells):
        assert abs(estimate - exact) < 4 * error, (estimate, error, exact)
        assert error < 0.04  # the power to see the negative control's bias (0.07 at 300 K)
    assert 0.15 < move.acceptance_rate < 0.5
    assert np.sum(np.diff(wells[:, 0]) != 0) > 40  # the cold state changed wells, through the exchange


def test_dropping_the_map_jacobian_gives_wrong_populations():
    """Negative control: the same chain with the map's Jacobian left out of log q misses the 300 K population by > 4 sigma."""
    system, wells, _ = exchange_chain(WarpedTemperatureMap(warp=0.45, with_jacobian=False), 2000, seed=12)
    estimate, error, exact = left_populations(system, wells)[0]
    assert abs(estimate - exact) > 4 * error, (estimate, error, exact)
