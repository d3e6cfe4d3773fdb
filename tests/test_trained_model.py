"""(b) Exactness with a trained diffusion model whose training data is wrong on purpose."""
import numpy as np
import pytest
import torch
from conftest import run_chain
from openmm import unit
from openmmtools import mcmc

from openmm_ddpm.analysis import batch_means_standard_error
from openmm_ddpm.coordinates import CartesianCoordinates, Representation
from openmm_ddpm.model import (
    ConditionedMLP,
    DiffusionProposalModel,
    EDMDiffusion,
    OnlineTrainer,
)
from openmm_ddpm.moves import GenerativeProposal
from openmm_ddpm.settings import DiffusionSettings, TrainingSettings

TEMPERATURE = 300.0 * unit.kelvin


@pytest.fixture(scope="module")
def model_trained_on_wrong_populations(double_well):
    """Trained on 50/50 well data at 300, 450 and 600 K (exact 300 K answer ~90/10)."""
    frames, kelvins = [], []
    for kelvin in (300.0, 450.0, 600.0):
        for well in (0, 1):
            frames.append(double_well.sample_well_by_md(kelvin * unit.kelvin, well, 2000, seed=int(kelvin) + well))
            kelvins.append(np.full(2000, kelvin))
    frames, kelvins = np.concatenate(frames), np.concatenate(kelvins)
    representation = Representation.fit(CartesianCoordinates(1), frames, np.random.default_rng(0))
    features, _ = representation.forward(frames)
    diffusion = EDMDiffusion(ConditionedMLP(3, width=64, depth=2), DiffusionSettings(n_steps=20))
    trainer = OnlineTrainer(diffusion, TrainingSettings(learning_rate=2e-3, ema_decay=0.99), seed=0)
    trainer.step(features.float(), torch.as_tensor(kelvins, dtype=torch.float32), 2500)
    return DiffusionProposalModel(trainer.frozen_diffusion(), representation)


@pytest.mark.slow
def test_trained_model_is_biased_but_the_chain_is_exact(double_well, model_trained_on_wrong_populations, reference_context_cache):
    model = model_trained_on_wrong_populations
    exact = double_well.exact_populations(TEMPERATURE).left
    samples, _ = model.sample(2000, TEMPERATURE, generator=torch.Generator().manual_seed(0))
    model_left = np.mean(double_well.well_index(samples) == 0)
    assert abs(model_left - 0.5) < 0.06  # the model learned the wrong populations

    proposal = GenerativeProposal(model, n_candidates=8, random_state=7)
    dynamics = mcmc.LangevinDynamicsMove(timestep=2.0 * unit.femtosecond, n_steps=50, reassign_velocities=False)
    wells = run_chain(double_well, mcmc.SequenceMove([dynamics, proposal]), TEMPERATURE, 260, reference_context_cache, start_well=1)
    left = (wells[20:] == 0).astype(float)  # 20 moves of burn-in from the minor well
    estimate, error = left.mean(), batch_means_standard_error(left, n_batches=12)
    print(f"model P(left)={model_left:.3f} chain P(left)={estimate:.3f}+-{error:.3f} exact={exact:.4f} "
          f"acceptance={proposal.statistics.acceptance_rate:.2f} ess={proposal.statistics.mean_ess_fraction:.2f}")
    assert abs(estimate - exact) < 4 * error
    assert abs(estimate - model_left) > 8 * error  # the correction is visible, not within noise
    assert proposal.statistics.invalid_fraction < 0.01
