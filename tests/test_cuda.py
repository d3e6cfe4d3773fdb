"""The CUDA path gives the numbers of the CPU path (skipped where no GPU is visible).

The rest of the suite also runs on a GPU machine with ``device='auto'``
(the samplers then train and propose on CUDA); these tests compare the
two devices directly: the same seed gives the same draws, and the exact
log-densities agree to float64 round-off.
"""
import copy

import numpy as np
import pytest
import torch
from openmm import unit

from openmm_ddpm.coordinates import CartesianCoordinates, Representation
from openmm_ddpm.model import (
    ConditionedMLP,
    DiffusionProposalModel,
    EDMDiffusion,
    OnlineTrainer,
)
from openmm_ddpm.settings import DiffusionSettings, TrainingSettings

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def random_diffusion(n_features=4, seed=0):
    """A float64 CPU diffusion model with random (non-trivial) weights."""
    torch.manual_seed(seed)
    network = ConditionedMLP(n_features, width=32, depth=2).double()
    for parameter in network.parameters():
        parameter.data.normal_(0.0, 0.3)
    return EDMDiffusion(network, DiffusionSettings(n_steps=12))


def on_cuda(diffusion):
    return EDMDiffusion(copy.deepcopy(diffusion.network).cuda(), diffusion.settings)


def test_flow_samples_and_log_densities_agree_across_devices():
    cpu = random_diffusion()
    gpu = on_cuda(cpu)
    a = cpu.sample_flow(256, 420.0, generator=torch.Generator().manual_seed(1))
    b = gpu.sample_flow(256, 420.0, generator=torch.Generator().manual_seed(1))
    assert b.x.device.type == "cuda"
    assert torch.allclose(a.latent, b.latent.cpu(), rtol=0, atol=0)  # same CPU draws
    assert torch.max(torch.abs(a.x - b.x.cpu())).item() < 1e-9
    assert torch.max(torch.abs(a.log_prob - b.log_prob.cpu())).item() < 1e-8


def test_encode_on_cuda_inverts_decode_with_the_same_log_density():
    gpu = on_cuda(random_diffusion(seed=2))
    sample = gpu.sample_flow(300, 650.0, generator=torch.Generator().manual_seed(3))
    encoding = gpu.encode(sample.x, 650.0)
    assert bool(encoding.converged.all())
    assert torch.max(torch.abs(encoding.latent - sample.latent)).item() < 1e-8
    assert torch.max(torch.abs(encoding.log_prob - sample.log_prob)).item() < 1e-8


def test_proposal_model_on_cuda_scores_like_cpu():
    """Positions come back on the CPU; log q of the fused and plain paths equal the CPU model's."""
    coordinates = CartesianCoordinates(2)
    positions = np.random.default_rng(4).normal(size=(500, 2, 3)) * 0.1
    representation = Representation.fit(coordinates, positions, np.random.default_rng(0))
    cpu_diffusion = random_diffusion(n_features=6, seed=5)
    cpu_model = DiffusionProposalModel(cpu_diffusion, representation)
    gpu_model = DiffusionProposalModel(on_cuda(cpu_diffusion), representation)
    temperature = 350.0 * unit.kelvin
    candidates, log_q = gpu_model.sample(64, temperature, generator=torch.Generator().manual_seed(6))
    assert isinstance(candidates, np.ndarray) and candidates.shape == (64, 2, 3)
    assert np.max(np.abs(log_q - cpu_model.log_prob(candidates, temperature))) < 1e-8
    fast, fast_log_q = gpu_model.sample(64, temperature, generator=torch.Generator().manual_seed(6),
                                        score_on_the_way_out=True)
    assert np.max(np.abs(fast - candidates)) < 1e-9
    assert np.max(np.abs(fast_log_q - log_q)) < 1e-7
    unweighted = gpu_model.generate(32, temperature, generator=torch.Generator().manual_seed(7))
    assert unweighted.shape == (32, 2, 3) and np.isfinite(unweighted).all()


def test_training_on_cuda_fits_a_gaussian_scale():
    """1500 steps on CUDA learn data of std 0.5: model samples have std close to it."""
    torch.manual_seed(8)
    network = ConditionedMLP(2, width=64, depth=2).cuda()
    diffusion = EDMDiffusion(network, DiffusionSettings(n_steps=20))
    trainer = OnlineTrainer(diffusion, TrainingSettings(batch_size=512, learning_rate=3e-3), seed=9)
    data = 0.5 * torch.randn(20000, 2)
    trainer.step(data, torch.full((20000,), 300.0), 1500)
    model = trainer.frozen_diffusion()
    assert model.device.type == "cuda"
    x = model.sample_flow(4000, 300.0, generator=torch.Generator().manual_seed(10), with_log_prob=False).x
    assert abs(float(x.std()) - 0.5) < 0.05
