"""The proposal protocol of a diffusion model over a representation."""
import numpy as np
import pytest
import torch
from analytic import GaussianDenoiserNetwork
from openmm import unit

from openmm_ddpm.coordinates import CartesianCoordinates, Representation, Standardizer
from openmm_ddpm.model import DiffusionProposalModel, EDMDiffusion
from openmm_ddpm.settings import DiffusionSettings


@pytest.fixture
def two_atom_model():
    """Two atoms, centre of mass removed: 3 features, analytic Gaussian score."""
    coordinates = CartesianCoordinates(2, masses=[1.0, 3.0], remove_center_of_mass=True)
    representation = Representation(coordinates, Standardizer([0.1, 0.0, 0.0], [0.05, 0.05, 0.05]))
    network = GaussianDenoiserNetwork(torch.zeros(3), torch.tensor([0.5, 1.0, 1.5]))
    return DiffusionProposalModel(EDMDiffusion(network, DiffusionSettings(n_steps=15)), representation)


def test_candidates_keep_the_reference_frame(two_atom_model):
    reference = np.array([[1.0, 2.0, 3.0], [1.2, 2.0, 3.0]])
    positions, log_q = two_atom_model.sample(16, 300 * unit.kelvin, torch.Generator().manual_seed(0), reference)
    com = np.einsum("a,nai->ni", np.array([0.25, 0.75]), positions)
    assert np.allclose(com, [1.15, 2.0, 3.0], atol=1e-12)
    assert np.all(np.isfinite(log_q))


def test_fused_and_separate_scores_agree(two_atom_model):
    temperature = 400 * unit.kelvin
    current = np.array([[0.0, 0.0, 0.0], [0.1, 0.02, -0.01]])
    generator = torch.Generator().manual_seed(1)
    candidates, log_q, log_q_current = two_atom_model.sample_and_score(5, temperature, current, generator)
    assert np.allclose(log_q, two_atom_model.log_prob(candidates, temperature), atol=1e-8)
    assert log_q_current == pytest.approx(two_atom_model.log_prob(current, temperature)[0], abs=1e-8)


def test_log_prob_includes_the_representation_jacobian(two_atom_model):
    """log q over positions = log q over features + log|det| of positions -> features."""
    temperature = 300 * unit.kelvin
    positions, log_q = two_atom_model.sample(4, temperature, torch.Generator().manual_seed(2), np.zeros((2, 3)))
    features, logdet = two_atom_model.representation.forward(positions)
    feature_log_q = two_atom_model.diffusion.log_prob(features, 300.0)
    assert np.allclose(log_q, (feature_log_q + logdet).numpy(), atol=1e-10)
    assert np.all(logdet.numpy() > 0)  # standardizing by 0.05 nm expands volumes


def test_frame_is_required_and_temperature_must_carry_units(two_atom_model):
    with pytest.raises(ValueError, match="reference_positions"):
        two_atom_model.sample(2, 300 * unit.kelvin)
    with pytest.raises(TypeError, match="Quantity"):
        two_atom_model.log_prob(np.zeros((1, 2, 3)), 300.0)
    with pytest.raises(ValueError, match="positive"):
        two_atom_model.log_prob(np.zeros((1, 2, 3)), -5 * unit.kelvin)


def test_generate_gives_unweighted_samples_with_the_model_spread(two_atom_model):
    positions = two_atom_model.generate(4000, 300 * unit.kelvin, torch.Generator().manual_seed(3), np.zeros((2, 3)))
    relative = positions[:, 0] - np.einsum("a,nai->ni", np.array([0.25, 0.75]), positions)
    # feature std = 0.05 nm * sqrt(model variance), model variance (0.5, 1.0, 1.5)
    assert np.allclose(relative.std(axis=0), 0.05 * np.sqrt([0.5, 1.0, 1.5]), rtol=0.06)
