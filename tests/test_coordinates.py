"""Representations: round trips and log-determinants against finite differences."""
import numpy as np
import pytest
import torch

from openmm_ddpm.coordinates import CartesianCoordinates, Representation, Standardizer


def finite_difference_jacobian(function, x, eps=1e-6):
    """Central-difference Jacobian of a map R^D -> R^D at x (float64)."""
    x = np.asarray(x, dtype=float)
    columns = []
    for i in range(x.size):
        step = np.zeros_like(x)
        step[i] = eps
        columns.append((function(x + step) - function(x - step)) / (2 * eps))
    return np.stack(columns, axis=1)


@pytest.fixture
def random_positions():
    return torch.as_tensor(np.random.default_rng(0).normal(size=(5, 4, 3)))


def test_plain_cartesian_is_identity_with_zero_logdet(random_positions):
    coordinates = CartesianCoordinates(4)
    features, logdet = coordinates.forward(random_positions)
    assert features.shape == (5, 12)
    back, inverse_logdet = coordinates.inverse(features)
    assert torch.equal(back, random_positions)
    assert torch.all(logdet == 0) and torch.all(inverse_logdet == 0)


def test_center_of_mass_removal_round_trip_and_frame(random_positions):
    masses = np.array([12.0, 1.0, 16.0, 14.0])
    coordinates = CartesianCoordinates(4, masses=masses, remove_center_of_mass=True)
    features, _ = coordinates.forward(random_positions)
    assert features.shape == (5, 9) and coordinates.n_features == 9
    frame = coordinates.frame(random_positions)
    back, _ = coordinates.inverse(features, frame)
    assert torch.allclose(back, random_positions, atol=1e-13)
    expected_com = np.einsum("a,nai->ni", masses / masses.sum(), random_positions.numpy())
    assert np.allclose(frame.numpy(), expected_com, atol=1e-14)


def test_center_of_mass_logdet_matches_finite_differences(random_positions):
    masses = np.array([12.0, 1.0, 16.0, 14.0])
    coordinates = CartesianCoordinates(4, masses=masses, remove_center_of_mass=True)

    def square_map(flat):
        positions = torch.as_tensor(flat.reshape(1, 4, 3))
        features, _ = coordinates.forward(positions)
        return np.concatenate([features[0].numpy(), coordinates.frame(positions)[0].numpy()])

    jacobian = finite_difference_jacobian(square_map, random_positions[0].numpy().ravel())
    _, expected = np.linalg.slogdet(jacobian)
    _, logdet = coordinates.forward(random_positions[:1])
    features, _ = coordinates.forward(random_positions[:1])
    _, inverse_logdet = coordinates.inverse(features, coordinates.frame(random_positions[:1]))
    assert logdet.item() == pytest.approx(expected, abs=1e-7)
    assert (logdet + inverse_logdet).item() == pytest.approx(0.0, abs=1e-12)


def test_standardizer_round_trip_and_logdet():
    data = torch.as_tensor(np.random.default_rng(1).normal([1.0, -2.0, 5.0], [0.1, 3.0, 0.5], size=(500, 3)))
    standardizer = Standardizer.fit(data)
    z, logdet = standardizer.forward(data)
    assert torch.allclose(z.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(z.std(0), torch.ones(3, dtype=torch.float64), atol=1e-12)
    back, inverse_logdet = standardizer.inverse(z)
    assert torch.allclose(back, data, atol=1e-12)
    jacobian = finite_difference_jacobian(lambda f: standardizer.forward(torch.as_tensor(f[None]))[0][0].numpy(), data[0].numpy())
    assert logdet[0].item() == pytest.approx(np.linalg.slogdet(jacobian)[1], abs=1e-7)
    assert torch.allclose(logdet + inverse_logdet, torch.zeros(500, dtype=torch.float64))


def test_standardizer_state_dict_round_trip():
    standardizer = Standardizer([1.0, 2.0], [0.5, 3.0])
    again = Standardizer.from_state_dict(standardizer.state_dict())
    assert torch.equal(again.mean, standardizer.mean) and torch.equal(again.scale, standardizer.scale)


def test_representation_composes_logdets(random_positions):
    coordinates = CartesianCoordinates(4, remove_center_of_mass=True)
    representation = Representation.fit(coordinates, random_positions, np.random.default_rng(0))
    z, logdet = representation.forward(random_positions)
    _, logdet_coordinates = coordinates.forward(random_positions)
    standardizer_logdet = -torch.log(representation.standardizer.scale).sum()
    assert torch.allclose(logdet, logdet_coordinates + standardizer_logdet)
    back, inverse_logdet, valid = representation.inverse(z, representation.frame(random_positions))
    assert torch.allclose(back, random_positions, atol=1e-12)
    assert torch.allclose(logdet + inverse_logdet, torch.zeros(5, dtype=torch.float64), atol=1e-12)
    assert valid.all()


@pytest.mark.parametrize(
    "kwargs",
    [dict(n_atoms=0), dict(n_atoms=1, remove_center_of_mass=True), dict(n_atoms=2, masses=[1.0, -1.0])],
)
def test_bad_cartesian_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        CartesianCoordinates(**kwargs)


def test_wrong_atom_count_and_missing_frame_raise(random_positions):
    with pytest.raises(ValueError, match="expected 3 atoms"):
        CartesianCoordinates(3).forward(random_positions)
    coordinates = CartesianCoordinates(4, remove_center_of_mass=True)
    features, _ = coordinates.forward(random_positions)
    with pytest.raises(ValueError, match="frame"):
        coordinates.inverse(features)
