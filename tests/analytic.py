"""Analytic stand-ins used by several tests (not a test module)."""
import math

import numpy as np
import torch


class GaussianDenoiserNetwork(torch.nn.Module):
    """The exact EDM network F for Gaussian data N(mu, diag(var(T))).

    With data x ~ N(mu, diag(v)), the noised density is N(mu, diag(v + sigma^2))
    and the ideal denoiser is D(x; sigma) = mu + v / (v + sigma^2) (x - mu).
    F is recovered from D = c_skip x + c_out F(c_in x). The variance grows
    linearly with temperature, v(T) = v_300 T / 300, like a harmonic well.
    """

    def __init__(self, mean, variance_at_300k, sigma_data=1.0):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float64))
        self.register_buffer("variance_at_300k", torch.as_tensor(variance_at_300k, dtype=torch.float64))
        self.sigma_data = sigma_data
        self.n_features = self.mean.numel()

    def variance(self, temperature_kelvin):
        return self.variance_at_300k * (temperature_kelvin / 300.0).unsqueeze(-1)

    def forward(self, x_in, c_noise, temperature_kelvin):
        sigma = torch.exp(4.0 * c_noise).unsqueeze(-1)
        sd2 = self.sigma_data**2
        total = sigma**2 + sd2
        x = x_in * total.sqrt()
        v = self.variance(temperature_kelvin)
        denoised = self.mean + v / (v + sigma**2) * (x - self.mean)
        c_skip = sd2 / total
        c_out = sigma * self.sigma_data / total.sqrt()
        return (denoised - c_skip * x) / c_out


def exact_flow_log_prob(x, variance, sigma_min, sigma_max):
    """log-density of the exact (continuous) probability-flow pushforward.

    For zero-mean Gaussian data of variance v, the flow is linear per
    dimension: x(sigma) = x(sigma_max) sqrt((v + sigma^2) / (v + sigma_max^2)),
    so N(0, sigma_max^2) maps to N(0, sigma_max^2 (v + sigma_min^2) / (v + sigma_max^2)).
    """
    var = sigma_max**2 * (variance + sigma_min**2) / (variance + sigma_max**2)
    return (-0.5 * x**2 / var - 0.5 * torch.log(2 * math.pi * var)).sum(dim=-1)


class GaussianMixtureModel:
    """A fixed analytic proposal: a Gaussian mixture over positions (nm).

    Implements the ``GenerativeProposal`` model protocol; the temperature is
    ignored (the same q at every temperature is a valid, if poor, proposal).
    """

    def __init__(self, means_nm, stddevs_nm, weights):
        self.means = np.asarray(means_nm, dtype=float)  # (M, N, 3)
        self.stddevs = np.asarray(stddevs_nm, dtype=float)  # (M,)
        self.weights = np.asarray(weights, dtype=float) / np.sum(weights)

    def sample(self, n, temperature, generator=None, reference_positions=None):
        seed = int(torch.randint(2**62, (1,), generator=generator))
        rng = np.random.default_rng(seed)
        component = rng.choice(len(self.weights), size=n, p=self.weights)
        noise = rng.standard_normal((n,) + self.means.shape[1:])
        positions = self.means[component] + self.stddevs[component, None, None] * noise
        return positions, self.log_prob(positions, temperature)

    def log_prob(self, positions, temperature):
        positions = np.asarray(positions, dtype=float)
        d = positions[0].size
        diff = positions[:, None] - self.means[None]
        sq = (diff**2).reshape(len(positions), len(self.weights), -1).sum(-1)
        log_components = (
            np.log(self.weights) - 0.5 * sq / self.stddevs**2 - d * np.log(self.stddevs) - 0.5 * d * np.log(2 * np.pi)
        )
        top = log_components.max(axis=1, keepdims=True)
        return (top + np.log(np.exp(log_components - top).sum(axis=1, keepdims=True)))[:, 0]
