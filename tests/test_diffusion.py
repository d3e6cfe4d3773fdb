"""The diffusion model: exact density of the flow map, encode/decode, samplers, training."""
import math

import numpy as np
import pytest
import torch
from analytic import GaussianDenoiserNetwork, exact_flow_log_prob
from test_coordinates import finite_difference_jacobian

from openmm_ddpm.model import ConditionedMLP, EDMDiffusion, OnlineTrainer
from openmm_ddpm.settings import DiffusionSettings, TrainingSettings

VARIANCE_300K = torch.tensor([0.3, 1.0, 2.5], dtype=torch.float64)


def analytic_diffusion(n_steps, sigma_min=0.05):
    network = GaussianDenoiserNetwork(torch.zeros(3), VARIANCE_300K)
    return EDMDiffusion(network, DiffusionSettings(n_steps=n_steps, sigma_min=sigma_min))


def test_flow_log_density_matches_analytic_gaussian():
    """With the exact score of Gaussian data the flow map is linear in closed form."""
    diffusion = analytic_diffusion(n_steps=200)
    sample = diffusion.sample_flow(300, 450.0, generator=torch.Generator().manual_seed(0))
    expected = exact_flow_log_prob(sample.x, VARIANCE_300K * 1.5, 0.05, diffusion.settings.sigma_max)
    assert torch.max(torch.abs(sample.log_prob - expected)).item() < 1e-3


def test_flow_log_density_error_shrinks_with_steps():
    errors = []
    for n_steps in (20, 40, 80):
        diffusion = analytic_diffusion(n_steps)
        sample = diffusion.sample_flow(100, 300.0, generator=torch.Generator().manual_seed(1))
        expected = exact_flow_log_prob(sample.x, VARIANCE_300K, 0.05, diffusion.settings.sigma_max)
        errors.append(torch.max(torch.abs(sample.log_prob - expected)).item())
    assert errors[0] > 3 * errors[1] > 9 * errors[2]  # Heun is second order


def test_encode_inverts_decode_and_log_densities_agree():
    diffusion = analytic_diffusion(n_steps=30)
    sample = diffusion.sample_flow(200, 600.0, generator=torch.Generator().manual_seed(2))
    encoding = diffusion.encode(sample.x, 600.0)
    assert encoding.converged.all()
    assert torch.max(torch.abs(encoding.latent - sample.latent)).item() < 1e-8
    assert torch.max(torch.abs(encoding.log_prob - sample.log_prob)).item() < 1e-8
    decoded = diffusion.decode(encoding.latent, 600.0)
    assert torch.max(torch.abs(decoded.x - sample.x)).item() < 1e-10


def test_chord_iterations_find_the_same_points_with_fewer_jacobians():
    """A 40-feature network: decode -> encode gives the latent and log q back whether the cheap iterations are
    preconditioned with the previous step's Jacobian (the chord) or not, and the chord saves Jacobians."""
    torch.manual_seed(5)
    network = ConditionedMLP(40, width=32, depth=2).double()
    for parameter in network.parameters():
        parameter.data.normal_(0.0, 0.1)
    diffusion = EDMDiffusion(network, DiffusionSettings(n_steps=8))
    sample = diffusion.sample_flow(16, 450.0, generator=torch.Generator().manual_seed(3))
    calls, step_with_jacobian, invert_step = [], diffusion.step_with_jacobian, diffusion._invert_step
    diffusion.step_with_jacobian = lambda *args: calls.append(1) or step_with_jacobian(*args)
    encodings = {}
    for route in ("chord", "identity"):
        if route == "identity":
            diffusion._invert_step = lambda y, a, b, t, chord=None: invert_step(y, a, b, t, None)
        calls.clear()
        encodings[route] = (diffusion.encode(sample.x, 450.0), len(calls))
    for encoding, _ in encodings.values():
        assert encoding.converged.all()
        assert torch.max(torch.abs(encoding.latent - sample.latent)).item() < 1e-9
        assert torch.max(torch.abs(encoding.log_prob - sample.log_prob)).item() < 1e-8
    assert 8 <= encodings["chord"][1] < encodings["identity"][1]  # measured 10 against 14


def test_whole_map_log_det_matches_finite_differences():
    """log q(x) = log N(z) - log|det dPhi/dz| with the Jacobian of the whole discrete map."""
    torch.manual_seed(3)
    network = ConditionedMLP(3, width=32, depth=2).double()
    for parameter in network.parameters():
        parameter.data.normal_(0.0, 0.3)
    diffusion = EDMDiffusion(network, DiffusionSettings(n_steps=12))
    z = torch.randn(1, 3, dtype=torch.float64) * 3.0
    sample = diffusion.decode(z, 350.0)
    jacobian = finite_difference_jacobian(lambda v: diffusion.decode(torch.as_tensor(v[None]), 350.0, with_log_prob=False).x[0].numpy(), z[0].numpy())
    expected = diffusion.prior_log_prob(z)[0].item() - np.linalg.slogdet(jacobian)[1]
    assert sample.log_prob[0].item() == pytest.approx(expected, abs=1e-6)
    encoding = diffusion.encode(sample.x, 350.0)
    assert encoding.log_prob[0].item() == pytest.approx(expected, abs=1e-6)


class OpaqueNetwork(torch.nn.Module):
    """The same function as a ConditionedMLP, without ``forward_with_input_jacobian``: the reverse-mode route."""

    def __init__(self, network):
        super().__init__()
        self.inner = network
        self.n_features = network.n_features

    def forward(self, x, c_noise, temperature_kelvin):
        return self.inner(x, c_noise, temperature_kelvin)


@pytest.mark.parametrize("route", ["forward mode (ConditionedMLP)", "reverse mode (any network)"])
def test_step_jacobian_matches_autograd_reference(route):
    torch.manual_seed(4)
    network = ConditionedMLP(4, width=16, depth=2).double()
    for parameter in network.parameters():
        parameter.data.normal_(0.0, 0.5)
    diffusion = EDMDiffusion(network if route.startswith("forward") else OpaqueNetwork(network))
    x = torch.randn(3, 4, dtype=torch.float64)
    t = torch.tensor([300.0, 400.0, 500.0], dtype=torch.float64)
    value, jacobian = diffusion.step_with_jacobian(x, 2.0, 1.5, t)
    for i in range(3):
        reference = torch.autograd.functional.jacobian(lambda v: diffusion.heun_step(v[None], 2.0, 1.5, t[i : i + 1])[0], x[i])
        assert torch.allclose(jacobian[i], reference, atol=1e-12)
        # negative control: the Heun step's cross term h^2/2 B A left out is far outside that tolerance
        assert (jacobian[i] - reference).abs().max() < 1e-12 < 1e-3 < (_without_cross_term(diffusion, x[i], t[i]) - reference).abs().max()
    assert torch.allclose(value, diffusion.heun_step(x, 2.0, 1.5, t), atol=1e-14)


def _without_cross_term(diffusion, x, t):
    """I + h/2 (A + B): the Heun step's Jacobian with the B A term dropped (a wrong Jacobian)."""
    velocity = lambda v, sigma: diffusion.velocity(v[None], sigma, t[None])[0]  # noqa: E731
    a = torch.autograd.functional.jacobian(lambda v: velocity(v, 2.0), x)
    b = torch.autograd.functional.jacobian(lambda v: velocity(v, 1.5), x + (1.5 - 2.0) * velocity(x, 2.0))
    return torch.eye(len(x), dtype=x.dtype) + 0.5 * (1.5 - 2.0) * (a + b)


def test_forward_mode_network_jacobian_matches_finite_differences():
    """dF/dx of ConditionedMLP (forward mode through the residual blocks) against central differences."""
    torch.manual_seed(7)
    network = ConditionedMLP(5, width=12, depth=3).double()
    for parameter in network.parameters():
        parameter.data.normal_(0.0, 0.4)
    x = torch.randn(2, 5, dtype=torch.float64)
    c_noise, kelvin = torch.tensor([0.1, -0.3], dtype=torch.float64), torch.tensor([300.0, 700.0], dtype=torch.float64)
    with torch.no_grad():
        value, jacobian = network.forward_with_input_jacobian(x, c_noise, kelvin)
        assert torch.allclose(value, network(x, c_noise, kelvin), atol=1e-14)
        for i in range(2):
            numeric = finite_difference_jacobian(lambda v: network(torch.as_tensor(v[None]), c_noise[i : i + 1],
                                                                    kelvin[i : i + 1])[0].numpy(), x[i].numpy())
            np.testing.assert_allclose(jacobian[i].numpy(), numeric, atol=1e-7)


def test_non_finite_points_are_not_encodable():
    diffusion = analytic_diffusion(n_steps=10)
    x = torch.tensor([[0.1, 0.2, 0.3], [math.nan, 0.0, 0.0], [math.inf, 0.0, 0.0]], dtype=torch.float64)
    encoding = diffusion.encode(x, 300.0)
    assert encoding.converged.tolist() == [True, False, False]
    assert math.isfinite(encoding.log_prob[0].item()) and torch.isnan(encoding.log_prob[1:]).all()


def test_stochastic_sampler_reproduces_gaussian_moments():
    diffusion = analytic_diffusion(n_steps=10)
    x = diffusion.sample_sde(20000, 300.0, generator=torch.Generator().manual_seed(5))
    variance = x.var(dim=0)
    # the final denoising step shrinks the variance by v / (v + sigma_min^2)
    expected = VARIANCE_300K * VARIANCE_300K / (VARIANCE_300K + 0.05**2)
    assert torch.allclose(x.mean(dim=0), torch.zeros(3, dtype=torch.float64), atol=0.05)
    assert torch.allclose(variance, expected, rtol=0.05)


def test_training_learns_temperature_dependent_gaussian():
    """A trained network reproduces the variance at each training temperature and in between."""
    generator = torch.Generator().manual_seed(6)
    temperatures = torch.tensor([300.0, 600.0]).repeat_interleave(4000)
    data = torch.randn(8000, 2, generator=generator) * torch.sqrt(temperatures / 300.0).unsqueeze(-1) * 0.7
    # two temperatures a doubling apart: an embedding of up to 2 cycles per doubling resolves them in 1500 steps
    # (the default, 0.25, is tuned for interpolating across a 4-state ladder: ModelSettings)
    network = ConditionedMLP(2, width=64, depth=2, temperature_max_frequency=2.0)
    diffusion = EDMDiffusion(network, DiffusionSettings(n_sde_steps=100))
    trainer = OnlineTrainer(diffusion, TrainingSettings(batch_size=256, learning_rate=3e-3, ema_decay=0.99), seed=0)
    first = trainer.step(data, temperatures, 50)
    last = trainer.step(data, temperatures, 1500)
    assert last < first
    frozen = trainer.frozen_diffusion()
    assert frozen.dtype == torch.float64 and not any(p.requires_grad for p in frozen.network.parameters())
    for kelvin in (300.0, 450.0, 600.0):
        x = frozen.sample_sde(4000, kelvin, generator=torch.Generator().manual_seed(7))
        assert x.var(dim=0).mean().item() == pytest.approx(0.49 * kelvin / 300.0, rel=0.2)


def test_settings_are_validated():
    with pytest.raises(ValueError):
        DiffusionSettings(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError):
        DiffusionSettings(n_steps=0)
    with pytest.raises(ValueError):
        TrainingSettings(learning_rate=0.0)
