"""Several molecules: one Z-matrix each, frames kept, log-dets added, rotors verified on the whole System."""
import math

import numpy as np
import openmm
import pytest
import torch
from openmm import app, unit
from openmmtools import testsystems
from test_coordinates import finite_difference_jacobian

from openmm_ddpm.coordinates import (
    InternalCoordinates,
    MoleculeCoordinates,
    molecular_coordinates,
)
from openmm_ddpm.coordinates.geometry import dihedral
from openmm_ddpm.coordinates.topology import (
    bond_graph_from_system,
    connected_components,
)

OFFSET_NM = np.array([1.2, 0.3, -0.4])


@pytest.fixture(scope="module")
def two_alanines():
    """Two alanine dipeptides 1.2 nm apart, amber14 in vacuum, unconstrained: System and positions (nm)."""
    single = testsystems.AlanineDipeptideVacuum(constraints=None)
    positions = np.asarray(single.positions.value_in_unit(unit.nanometer))
    modeller = app.Modeller(single.topology, single.positions)
    modeller.add(single.topology, (positions + OFFSET_NM) * unit.nanometer)
    system = app.ForceField("amber14-all.xml").createSystem(modeller.topology, nonbondedMethod=app.NoCutoff,
                                                           constraints=None)
    return system, np.asarray(modeller.positions.value_in_unit(unit.nanometer)), single


def perturbed(positions, n, scale=0.01, seed=0):
    noise = np.random.default_rng(seed).normal(0.0, scale, size=(n,) + positions.shape)
    return torch.as_tensor(positions[None] + noise)


def test_components_and_the_one_molecule_case(two_alanines):
    system, positions, single = two_alanines
    neighbours, _ = bond_graph_from_system(system)
    assert connected_components(neighbours) == [list(range(22)), list(range(22, 44))]
    assert isinstance(molecular_coordinates(single.system, positions[:22]), InternalCoordinates)
    coordinates = molecular_coordinates(system, positions)
    assert isinstance(coordinates, MoleculeCoordinates) and coordinates.n_features == 2 * 60
    # three methyl rotors per molecule, verified on the whole System's energy, in System atom indices
    assert sorted(sorted(h) for h, _ in coordinates.rotor_groups) == [
        [0, 2, 3], [11, 12, 13], [19, 20, 21], [22, 24, 25], [33, 34, 35], [41, 42, 43]]


def test_features_and_logdet_are_those_of_each_molecule(two_alanines):
    system, positions, single = two_alanines
    coordinates = molecular_coordinates(system, positions)
    x = perturbed(positions, 6, seed=1)
    features, logdet = coordinates.forward(x)
    first = InternalCoordinates.from_system(single.system, positions[:22])
    f1, l1 = first.forward(x[:, :22])
    f2, l2 = first.forward(x[:, 22:])  # the same Z-matrix, shifted by 22 atoms
    assert torch.allclose(features, torch.cat([f1, f2], dim=-1), atol=1e-12)
    assert torch.allclose(logdet, l1 + l2, atol=1e-12)


def test_round_trip_keeps_every_molecules_frame(two_alanines):
    system, positions, _ = two_alanines
    coordinates = molecular_coordinates(system, positions)
    coordinates.fit(perturbed(positions, 200, seed=3), np.random.default_rng(0))
    x = coordinates.relabel(perturbed(positions, 5, seed=2), np.random.default_rng(2))  # into the rotor windows
    features, logdet = coordinates.forward(x)
    assert coordinates.in_domain(features).all() and coordinates.valid_positions(x).all()
    back, inverse_logdet = coordinates.inverse(features, coordinates.frame(x))
    assert torch.allclose(back, x, atol=1e-10)
    assert torch.allclose(logdet + inverse_logdet, torch.zeros(5, dtype=torch.float64), atol=1e-12)
    # new internal coordinates, old frames: each molecule's first three placed atoms stay put
    other = coordinates.relabel(perturbed(positions, 5, seed=4), np.random.default_rng(4))
    moved, _ = coordinates.inverse(coordinates.forward(other)[0], coordinates.frame(x))
    for atoms, molecule in zip(coordinates.atoms, coordinates.molecules):
        anchor = atoms[molecule.order[0]]
        assert torch.allclose(moved[:, anchor], x[:, anchor], atol=1e-12)
    # torsion windows fitted per molecule and carried by the concatenated arrays into a rebuilt copy
    rebuilt = molecular_coordinates(system, positions, coordinates.torsion_cuts, torsion_widths=coordinates.torsion_widths)
    assert torch.equal(rebuilt.forward(x)[0], features)


def test_log_jacobian_matches_finite_differences_for_two_molecules(two_alanines):
    """Full map x -> (features, each molecule's frame parameters): |det| = 1 / prod (J_m sin theta_m)."""
    system, positions, _ = two_alanines
    coordinates = molecular_coordinates(system, positions)
    external = torch.tensor([[3.0, -2.0, 1.0]], dtype=torch.float64)

    def frame_parameters(x, atoms, molecule):
        a0, a1, a2 = (atoms[a] for a in molecule.order[:3])
        s = atoms[molecule.second_reference]
        other = a1 if s == a0 else a0
        e1 = (x[:, a1] - x[:, a0]) / torch.linalg.norm(x[:, a1] - x[:, a0])
        twist = dihedral(x[:, a2], x[:, s], x[:, other], external)
        return torch.cat([x[0, a0], torch.acos(e1[:, 2]), torch.atan2(e1[:, 1], e1[:, 0]), twist]), e1

    def full_map(flat):
        x = torch.as_tensor(flat.reshape(1, 44, 3))
        features, _ = coordinates.forward(x)
        frames = [frame_parameters(x, atoms, m)[0] for atoms, m in zip(coordinates.atoms, coordinates.molecules)]
        return torch.cat([features[0], *frames]).numpy()

    x = perturbed(positions, 1, seed=5)
    jacobian = finite_difference_jacobian(full_map, x[0].numpy().ravel(), eps=1e-7)
    _, logdet = coordinates.forward(x)
    sin_polar = [math.sin(math.acos(frame_parameters(x, atoms, m)[1][0, 2].item()))
                 for atoms, m in zip(coordinates.atoms, coordinates.molecules)]
    expected = np.linalg.slogdet(jacobian)[1]
    assert (logdet[0] - sum(math.log(s) for s in sin_polar)).item() == pytest.approx(expected, abs=1e-5)


def test_chirality_and_rotor_symmetry_per_molecule(two_alanines):
    system, positions, _ = two_alanines
    coordinates = molecular_coordinates(system, positions)
    coordinates.fit(perturbed(positions, 100, scale=0.01, seed=6), np.random.default_rng(0))
    x = perturbed(positions, 4, seed=7)
    mirrored = x.clone()
    mirrored[:, 22:, 0] = -mirrored[:, 22:, 0]  # the second molecule's mirror image only
    assert coordinates.valid_positions(x).all() and not coordinates.valid_positions(mirrored).any()
    relabelled = coordinates.relabel(x, np.random.default_rng(0))
    assert torch.isfinite(coordinates.log_multiplicity(relabelled)).all()
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    for before, after in zip(x, relabelled):
        energies = []
        for configuration in (before, after):
            context.setPositions(configuration.numpy())
            energies.append(context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        assert energies[1] == pytest.approx(energies[0], abs=1e-6)


def test_small_molecules_are_refused_with_the_reason():
    neighbours = [[1], [0], [3], [2, 4], [3]]  # a diatomic and a triatomic
    with pytest.raises(ValueError, match="fewer than 3 atoms"):
        MoleculeCoordinates(neighbours, ["M12", "M16", "H", "M16", "H"], np.zeros((5, 3)))


def test_proposals_move_shapes_and_keep_each_molecules_frame(two_alanines):
    """Model candidates for two molecules: each keeps the current frame, and log q is log_prob's."""
    from openmm_ddpm.coordinates import Representation
    from openmm_ddpm.model import ConditionedMLP, DiffusionProposalModel, EDMDiffusion
    from openmm_ddpm.settings import DiffusionSettings

    system, positions, _ = two_alanines
    coordinates = molecular_coordinates(system, positions)
    data = perturbed(positions, 300, scale=0.003, seed=8)
    representation = Representation.fit(coordinates, data, np.random.default_rng(0))
    network = ConditionedMLP(120, width=16, depth=1).double()  # zero output layer: a Gaussian fit of the data
    model = DiffusionProposalModel(EDMDiffusion(network, DiffusionSettings(n_steps=6)), representation)
    current = model.relabel(data[:1].numpy(), np.random.default_rng(0))[0]
    temperature = 300 * unit.kelvin
    candidates, log_q, log_q_current = model.sample_and_score(12, temperature, current, torch.Generator().manual_seed(0))
    valid = np.isfinite(log_q)
    assert valid.sum() >= 6 and np.isfinite(log_q_current)
    for atoms, molecule in zip(coordinates.atoms, coordinates.molecules):
        anchor = atoms[molecule.order[0]]
        assert np.allclose(candidates[valid][:, anchor], current[anchor], atol=1e-12)
    assert np.abs(candidates[valid] - current).max() > 1e-3  # the shapes did change
    assert np.allclose(model.log_prob(candidates[valid], temperature), log_q[valid], atol=1e-8)
