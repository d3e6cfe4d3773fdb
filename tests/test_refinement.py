"""Refinement of the model on the whole buffer: at the freeze (setting ``refine_steps``) and after a run."""
import copy
import os
import sys

import numpy as np
import openmm
import pytest
import torch
from openmm import unit
from openmmtools import cache, multistate, states

from openmm_ddpm.analysis import generate_at_temperature, reweighted_expectation
from openmm_ddpm.multistate import (
    DDPMParallelTemperingSampler,
    OnlineLearner,
    load_exported_model,
    load_run,
    read_ddpm_statistics,
    refine_proposal_model,
)
from openmm_ddpm.settings import Settings, TrainingSettings
from openmm_ddpm.testsystems import DoubleWell2D
from openmm_ddpm.units import kt_kj_per_mol

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "scripts"))
from double_well_remd import SMALL  # noqa: E402

UNSIMULATED = 450.0 * unit.kelvin


@pytest.fixture(autouse=True)
def reference_platform():
    cache.global_context_cache.empty()
    cache.global_context_cache.platform = openmm.Platform.getPlatformByName("Reference")


def exact_samples(well, temperature, n, rng):
    """Independent Boltzmann samples of DoubleWell2D: x by its marginal on the quadrature grid, then y | x and z Gaussian."""
    kt = kt_kj_per_mol(temperature)
    x_grid, weights = well._quadrature_grid(kt)
    x = rng.choice(x_grid, size=n, p=weights / weights.sum())
    k_y = well.spring_constant_y * np.exp(well.width_asymmetry * x / well.well_separation_nm)
    y = well.coupling * x + rng.normal(size=n) * np.sqrt(kt / k_y)
    z = rng.normal(size=n) * np.sqrt(kt / well.spring_constant_z)
    return np.stack([x, y, z], axis=1)[:, None, :]


def reweighted_left_population(model, well, n_samples=2000, seed=2):
    """P(left well) at UNSIMULATED from weighted model samples: (p, error, ESS fraction)."""
    positions, log_weights = generate_at_temperature(model, well.system, UNSIMULATED, n_samples, well.positions, seed=seed)
    estimate = reweighted_expectation(log_weights, well.well_index(positions) == 0)
    p, error, ess = estimate.mean, estimate.error, estimate.ess
    return p, error, ess / n_samples


def test_refinement_fits_a_temperature_missing_from_the_data():
    """Buffer: exact samples at 300, 600 and 1200 K. After two short online rounds the model
    reweights poorly at 450 K; refined on the whole buffer it reweights to the exact well
    population there with most samples useful."""
    torch.manual_seed(0)
    well, rng = DoubleWell2D(), np.random.default_rng(0)
    settings = Settings(model=dict(width=32, depth=1, n_steps=8),
                        training=TrainingSettings(train_steps=50, batch_size=64, min_buffer_frames=100))
    ddpm = OnlineLearner(settings, well.system, well.positions)
    for kelvin in (300.0, 600.0, 1200.0):
        ddpm.buffer.add(exact_samples(well, kelvin * unit.kelvin, 3000, rng), kelvin)
    ddpm.train()
    ddpm.train()
    ddpm.refresh_proposal_model()
    exact = well.exact_populations(UNSIMULATED).left
    _, _, ess_before = reweighted_left_population(ddpm.proposal_model, well)

    steps_before = ddpm.trainer.n_steps_done
    ddpm.refine(3000, report_every=1000)
    assert ddpm.trainer.n_steps_done == steps_before + 3000
    # the learning rate ended at the cosine's end, learning_rate / 100 without final_learning_rate
    assert ddpm.trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * 2 / 3))))
    p, error, ess_after = reweighted_left_population(ddpm.proposal_model, well)
    assert ess_before < 0.3 and ess_after > 0.7, (ess_before, ess_after)
    assert abs(p - exact) < 4 * error, (p, error, exact)
    # the proposal model is the refined EMA network, in float64
    for ema, used in zip(ddpm.trainer.ema_network.parameters(), ddpm.proposal_model.diffusion.network.parameters()):
        torch.testing.assert_close(ema.double(), used, rtol=0, atol=0)


def test_refine_before_any_training_is_refused():
    well = DoubleWell2D()
    ddpm = OnlineLearner(Settings(), well.system, well.positions)
    with pytest.raises(ValueError, match="not been trained"):
        ddpm.refine(10)
    with pytest.raises(ValueError, match="refine_steps"):
        TrainingSettings(refine_steps=-1)


def _run(storage, refine_steps, n_iterations=12, freeze_after=8):
    small = copy.deepcopy(SMALL)
    small["training"]["refine_steps"] = refine_steps
    well = DoubleWell2D()
    sampler = DDPMParallelTemperingSampler(number_of_iterations=n_iterations, freeze_after=freeze_after,
                                           online_analysis_interval=None, **small)
    sampler.create(states.ThermodynamicState(well.system, 300 * unit.kelvin), states.SamplerState(well.minimum_positions(1)),
                   multistate.MultiStateReporter(storage, checkpoint_interval=5),
                   temperatures=[300.0, 600.0, 1200.0] * unit.kelvin)
    sampler.run()
    return sampler


def test_refinement_at_the_freeze_happens_once_and_the_production_phase_uses_its_model(tmp_path):
    storage = str(tmp_path / "run.nc")
    sampler = _run(storage, refine_steps=300)
    statistics = read_ddpm_statistics(storage)
    steps = statistics["ddpm_training_steps"][1:13]
    per_round = SMALL["training"]["train_steps"]
    assert steps.tolist() == [0] + [per_round * k for k in range(1, 8)] + [7 * per_round + 300] * 4
    assert np.isfinite(statistics["ddpm_training_loss"][9]) and np.all(np.isnan(statistics["ddpm_training_loss"][10:13]))
    assert statistics["ddpm_phase"][9] == 1 and statistics["ddpm_n_candidates"][9] > 0
    # the checkpoint after the freeze holds the refined model, the one the moves used
    run = load_run(storage)
    model, ddpm, iteration = run.model, run.learner, run.iteration
    assert iteration == 10 and ddpm.frozen and ddpm.trainer.n_steps_done == 7 * per_round + 300
    frames = sampler.learner.buffer.arrays()[0][-20:].astype(np.float64)
    for proposal in sampler.learner.proposals.values():
        np.testing.assert_allclose(proposal.model.log_prob(frames, 300 * unit.kelvin),
                                   model.log_prob(frames, 300 * unit.kelvin), rtol=0, atol=1e-10)


def test_refine_a_finished_run_and_export_the_model(tmp_path):
    storage = str(tmp_path / "run.nc")
    _run(storage, refine_steps=0)
    run = load_run(storage)
    original, ddpm, _ = run.model, run.learner, run.iteration
    frames = ddpm.buffer.arrays()[0][-50:].astype(np.float64)
    path = str(tmp_path / "refined.pt")
    refined, digest = refine_proposal_model(storage, 200, path)
    exported = load_exported_model(path, DoubleWell2D().system, expected_sha256=digest)
    np.testing.assert_allclose(exported.log_prob(frames, 400 * unit.kelvin), refined.log_prob(frames, 400 * unit.kelvin),
                               rtol=0, atol=1e-10)
    assert np.max(np.abs(refined.log_prob(frames, 300 * unit.kelvin) - original.log_prob(frames, 300 * unit.kelvin))) > 1e-3
    # the run's own checkpoint is left as it was
    run = load_run(storage)
    again, _, _ = run.model, run.learner, run.iteration
    np.testing.assert_allclose(again.log_prob(frames, 300 * unit.kelvin), original.log_prob(frames, 300 * unit.kelvin),
                               rtol=0, atol=0)
    with pytest.raises(ValueError, match="n_steps"):
        refine_proposal_model(storage, 0, path)
