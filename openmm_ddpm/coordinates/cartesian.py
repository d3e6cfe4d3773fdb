"""Representations: bijections between positions (nm) and model features.

Every transform returns ``(value, logdet)`` where ``logdet`` is
log|det d(value)/d(input)| per sample (DESIGN.md section 3). Positions are
float64 torch tensors of shape (n, n_atoms, 3) in nm; features are
(n, n_features).

A representation may split positions into *features* (what the model sees)
and a *frame* (external degrees of freedom the proposal keeps from the
current configuration, e.g. the centre of mass). ``forward`` returns the
features and ``frame`` returns the frame; ``inverse(features, frame)``
rebuilds positions. The log-det of a frame-splitting map is that of the
square map positions -> (features, frame).
"""
import math

import numpy as np
import torch


def as_positions_tensor(positions, n_atoms=None):
    """Return positions as a float64 tensor of shape (n, n_atoms, 3), nm.

    Parameters
    ----------
    positions : array_like or torch.Tensor, shape (n, n_atoms, 3) or (n_atoms, 3), nm
    n_atoms : int, optional
        Expected number of atoms; checked if given.
    """
    tensor = torch.as_tensor(np.asarray(positions) if not torch.is_tensor(positions) else positions)
    tensor = tensor.to(torch.float64)
    if tensor.ndim == 2:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 3 or tensor.shape[-1] != 3:
        raise ValueError(f"positions must have shape (n, n_atoms, 3), got {tuple(tensor.shape)}")
    if n_atoms is not None and tensor.shape[1] != n_atoms:
        raise ValueError(f"expected {n_atoms} atoms, got {tensor.shape[1]}")
    return tensor


class CartesianCoordinates:
    """Cartesian positions as features, optionally without the centre of mass.

    With ``remove_center_of_mass=False`` (systems in an external field, such
    as ``DoubleWell2D``) the features are the flattened positions and
    logdet = 0.

    With ``remove_center_of_mass=True`` (isolated molecules, whose energy
    does not depend on the centre of mass) the features are the positions
    of atoms 0..N-2 relative to the mass-weighted centre c, an exact
    parametrization of the 3N-3 dimensional space at fixed c; the frame is
    c. The square map x -> (y, c), y_i = x_i - c, has constant Jacobian
    determinant (m_{N-1}/M)^3, so logdet = 3 ln(m_{N-1}/M).

    Parameters
    ----------
    n_atoms : int
    masses : array_like of float, shape (n_atoms,), amu, optional
        Needed only with ``remove_center_of_mass``; default equal masses.
    remove_center_of_mass : bool
    """

    def __init__(self, n_atoms, *, masses=None, remove_center_of_mass=False):
        if n_atoms < 1:
            raise ValueError(f"n_atoms must be >= 1, got {n_atoms}")
        if remove_center_of_mass and n_atoms < 2:
            raise ValueError("removing the centre of mass needs at least 2 atoms")
        self.n_atoms = int(n_atoms)
        self.remove_center_of_mass = bool(remove_center_of_mass)
        masses = np.ones(n_atoms) if masses is None else np.asarray(masses, dtype=float)
        if masses.shape != (n_atoms,) or np.any(masses <= 0):
            raise ValueError("masses must be positive with shape (n_atoms,)")
        self.masses = torch.as_tensor(masses, dtype=torch.float64)
        total = float(masses.sum())
        self._constant_logdet = 3.0 * math.log(masses[-1] / total) if remove_center_of_mass else 0.0

    @property
    def n_features(self):
        """Number of features: 3N, or 3N - 3 without the centre of mass."""
        return 3 * (self.n_atoms - 1 if self.remove_center_of_mass else self.n_atoms)

    def frame(self, positions):
        """Centre of mass (n, 3) in nm, or an empty (n, 0) tensor."""
        positions = as_positions_tensor(positions, self.n_atoms)
        if not self.remove_center_of_mass:
            return positions.new_zeros(positions.shape[0], 0)
        weights = self.masses / self.masses.sum()
        return torch.einsum("a,nai->ni", weights, positions)

    def forward(self, positions):
        """Positions (n, N, 3) nm -> (features (n, n_features), logdet (n,))."""
        positions = as_positions_tensor(positions, self.n_atoms)
        n = positions.shape[0]
        if self.remove_center_of_mass:
            relative = positions - self.frame(positions).unsqueeze(1)
            features = relative[:, :-1, :].reshape(n, -1)
        else:
            features = positions.reshape(n, -1)
        return features, features.new_full((n,), self._constant_logdet)

    def inverse(self, features, frame=None):
        """(features, frame) -> (positions (n, N, 3) nm, logdet (n,))."""
        n = features.shape[0]
        if not self.remove_center_of_mass:
            positions = features.reshape(n, self.n_atoms, 3)
            return positions, features.new_zeros(n)
        if frame is None:
            raise ValueError("a centre-of-mass-free representation needs the frame (centre of mass)")
        relative = features.reshape(n, self.n_atoms - 1, 3)
        masses = self.masses.to(features)
        last = -torch.einsum("a,nai->ni", masses[:-1], relative) / masses[-1]
        relative = torch.cat([relative, last.unsqueeze(1)], dim=1)
        positions = relative + frame.to(features).reshape(n, 1, 3)
        return positions, features.new_full((n,), -self._constant_logdet)

    def in_domain(self, features):
        """Boolean mask (n,): every finite Cartesian feature vector is valid."""
        return torch.isfinite(features).all(dim=-1)

    def valid_positions(self, positions):
        """Boolean mask (n,): finite configurations."""
        return torch.isfinite(as_positions_tensor(positions, self.n_atoms)).all(dim=(-2, -1))

    def fit(self, positions, rng=None):
        """Nothing to fit for Cartesian coordinates."""

    def relabel(self, positions, rng):
        """No symmetry groups: positions as a tensor, unchanged."""
        return as_positions_tensor(positions, self.n_atoms)

    def log_multiplicity(self, positions):
        """No symmetry groups: log n = 0."""
        return torch.zeros(as_positions_tensor(positions, self.n_atoms).shape[0], dtype=torch.float64)
