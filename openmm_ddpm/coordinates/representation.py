"""Standardization and the full representation: positions (nm) <-> model space.

``Representation`` chains a coordinates map (``CartesianCoordinates``,
``InternalCoordinates``, ``MoleculeCoordinates``) with a fitted per-feature
``Standardizer``; every map returns ``(value, logdet)``.
"""
import numpy as np
import torch


class Standardizer:
    """Per-feature affine map z = (f - mean) / scale, fitted on data.

    logdet = -sum(log scale) for the forward map.

    Parameters
    ----------
    mean, scale : array_like, shape (n_features,)
    """

    def __init__(self, mean, scale):
        self.mean = torch.as_tensor(np.asarray(mean, dtype=float), dtype=torch.float64)
        self.scale = torch.as_tensor(np.asarray(scale, dtype=float), dtype=torch.float64)
        if self.mean.shape != self.scale.shape or self.mean.ndim != 1:
            raise ValueError("mean and scale must be 1-d arrays of equal length")
        if not torch.all(self.scale > 0):
            raise ValueError("scale must be positive")
        self._logdet = -float(torch.log(self.scale).sum())

    @classmethod
    def fit(cls, features, min_scale=1e-6):
        """Fit mean and standard deviation per feature.

        Parameters
        ----------
        features : array_like, shape (n, n_features)
        min_scale : float
            Floor on the scale, so a constant feature stays invertible.
        """
        features = torch.as_tensor(features, dtype=torch.float64)
        if features.ndim != 2 or features.shape[0] < 2:
            raise ValueError("need at least two samples of shape (n, n_features) to fit")
        scale = features.std(dim=0).clamp_min(min_scale)
        return cls(features.mean(dim=0).numpy(), scale.numpy())

    def forward(self, features):
        """Features -> (standardized features, logdet (n,))."""
        z = (features - self.mean.to(features)) / self.scale.to(features)
        return z, z.new_full((z.shape[0],), self._logdet)

    def inverse(self, z):
        """Standardized features -> (features, logdet (n,))."""
        features = z * self.scale.to(z) + self.mean.to(z)
        return features, z.new_full((z.shape[0],), -self._logdet)

    def state_dict(self):
        """Tensors that reproduce this standardizer."""
        return {"mean": self.mean.clone(), "scale": self.scale.clone()}

    @classmethod
    def from_state_dict(cls, state):
        """Rebuild from ``state_dict()``."""
        return cls(state["mean"].numpy(), state["scale"].numpy())


class Representation:
    """Coordinates followed by standardization: positions <-> model space.

    Parameters
    ----------
    coordinates : CartesianCoordinates, InternalCoordinates, or another object
        with ``forward``, ``inverse``, ``frame``, ``fit``, ``in_domain``,
        ``valid_positions``, ``relabel``, ``log_multiplicity`` and ``n_features``
    standardizer : Standardizer
    """

    def __init__(self, coordinates, standardizer):
        if standardizer.mean.shape[0] != coordinates.n_features:
            raise ValueError(
                f"standardizer has {standardizer.mean.shape[0]} features, "
                f"coordinates have {coordinates.n_features}"
            )
        self.coordinates = coordinates
        self.standardizer = standardizer

    @classmethod
    def fit(cls, coordinates, positions, rng):
        """Fit the coordinates (e.g. torsion windows), then the standardizer, on positions (n, N, 3) nm.

        ``rng`` (numpy.random.Generator) draws the relabelling of symmetric atoms.
        """
        coordinates.fit(positions, rng)
        features, _ = coordinates.forward(coordinates.relabel(positions, rng))
        return cls(coordinates, Standardizer.fit(features))

    @property
    def n_features(self):
        return self.coordinates.n_features

    def frame(self, positions):
        return self.coordinates.frame(positions)

    def forward(self, positions):
        """Positions (n, N, 3) nm -> (model features, logdet (n,))."""
        features, logdet_coordinates = self.coordinates.forward(positions)
        z, logdet_standardize = self.standardizer.forward(features)
        return z, logdet_coordinates + logdet_standardize

    def inverse(self, z, frame=None):
        """Model features -> (positions (n, N, 3) nm, logdet (n,)), and a validity mask.

        Returns
        -------
        positions : torch.Tensor, (n, N, 3), nm
        logdet : torch.Tensor, (n,)
        valid : torch.BoolTensor, (n,)
            False where the features lie outside the representation's domain.
        """
        features, logdet_standardize = self.standardizer.inverse(z)
        positions, logdet_coordinates = self.coordinates.inverse(features, frame)
        valid = self.coordinates.in_domain(features) & self.coordinates.valid_positions(positions)
        return positions, logdet_standardize + logdet_coordinates, valid
