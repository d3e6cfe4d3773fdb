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


class WarpedTemperatureMap:
    """An analytic model with a nonlinear, temperature-dependent flow map on the double well's x.

    Per configuration of one particle, v = x / s; the model at temperature T
    is v = h_T(z), z ~ N(0, 1), with h_T(z) = z + c_T (2 / pi) sin(pi (z + 1) / 2),
    c_T = warp * ln(T / 300 K) (|c_T| < 1: monotone). h_T fixes z = -1 and
    z = 1 (the two minima) but its slope there is 1 + c_T and 1 - c_T, so the
    map between temperatures M = h_to o h_from^-1 squeezes one well and
    widens the other: its Jacobian differs between the wells, and a move
    that drops it gets the populations wrong. y and z are left as they are
    (standard Gaussians of width ``other_scale``: they cancel in the
    mapped exchange). ``with_jacobian=False`` reports the base density only
    (the negative control).
    """

    def __init__(self, x_scale=0.5, warp=0.35, other_scale=0.3, with_jacobian=True):
        self.x_scale, self.warp, self.other_scale, self.with_jacobian = x_scale, warp, other_scale, with_jacobian

    def _c(self, temperature):
        from openmm import unit

        return self.warp * math.log(temperature.value_in_unit(unit.kelvin) / 300.0)

    @staticmethod
    def _h(z, c):
        return z + c * (2 / math.pi) * np.sin(math.pi * (z + 1) / 2)

    @staticmethod
    def _slope(z, c):
        return 1 + c * np.cos(math.pi * (z + 1) / 2)

    def _h_inverse(self, v, c):
        z = np.array(v, dtype=float)
        for _ in range(60):  # Newton; the slope is >= 1 - |c| > 0
            z = z - (self._h(z, c) - v) / self._slope(z, c)
        return z

    def log_prob(self, positions, temperature):
        positions = np.asarray(positions, dtype=float).reshape(len(positions), -1, 3)
        c = self._c(temperature)
        z = self._h_inverse(positions[:, 0, 0] / self.x_scale, c)
        log_q = -0.5 * z**2 - 0.5 * math.log(2 * math.pi) - math.log(self.x_scale)
        if self.with_jacobian:
            log_q = log_q - np.log(self._slope(z, c))
        others = positions.reshape(len(positions), -1)[:, 1:] / self.other_scale
        log_q = log_q + (-0.5 * others**2 - 0.5 * math.log(2 * math.pi) - math.log(self.other_scale)).sum(-1)
        return log_q

    def map_temperature(self, positions, from_temperature, to_temperature, reference_positions=None):
        positions = np.asarray(positions, dtype=float)
        z = self._h_inverse(positions[:, 0, 0] / self.x_scale, self._c(from_temperature))
        mapped = positions.copy()
        mapped[:, 0, 0] = self.x_scale * self._h(z, self._c(to_temperature))
        return mapped, np.ones(len(positions), dtype=bool), self.log_prob(positions, from_temperature)
