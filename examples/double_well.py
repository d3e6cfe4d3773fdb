"""Exact populations of an asymmetric double well from a deliberately biased diffusion model.

The model is trained on Langevin frames from both wells in EQUAL numbers at
300, 450 and 600 K, so its own populations at 300 K are ~50/50; the exact
answer is ~90/10. A chain of Langevin dynamics (which never crosses the
barrier at 300 K) plus exact multiple-try proposals from the model recovers the
exact populations anyway.

Run:  python examples/double_well.py [--quick]
"""
import argparse
import time

import numpy as np
import openmm
import torch
from openmm import unit
from openmmtools import cache, mcmc, states

from openmm_ddpm.analysis import batch_means_standard_error
from openmm_ddpm.app.double_well import TRAINING_KELVINS, biased_training_data
from openmm_ddpm.coordinates import CartesianCoordinates, Representation
from openmm_ddpm.model import ConditionedMLP, DiffusionProposalModel, EDMDiffusion, OnlineTrainer
from openmm_ddpm.moves import GenerativeProposal
from openmm_ddpm.settings import DiffusionSettings, TrainingSettings
from openmm_ddpm.testsystems import DoubleWell2D


def train_model(frames, kelvins, n_steps):
    """Representation, diffusion and trainer; the frozen float64 model the proposals use."""
    representation = Representation.fit(CartesianCoordinates(1), frames, np.random.default_rng(0))
    features, _ = representation.forward(frames)
    diffusion = EDMDiffusion(ConditionedMLP(3, width=64, depth=2), DiffusionSettings(n_steps=20))
    trainer = OnlineTrainer(diffusion, TrainingSettings(learning_rate=2e-3, ema_decay=0.99), seed=0)
    for done in range(0, n_steps, 500):
        loss = trainer.step(features.float(), torch.as_tensor(kelvins, dtype=torch.float32), min(500, n_steps - done))
        print(f"  training step {done + 500:5d}/{n_steps}  loss {loss:.3f}", flush=True)
    return DiffusionProposalModel(trainer.frozen_diffusion(), representation)


def run_chain(system, model, temperature, n_iterations, n_candidates, seed):
    """Langevin dynamics (no barrier crossing at 300 K) and one exact proposal per iteration."""
    proposal = GenerativeProposal(model, n_candidates=n_candidates, random_state=seed)
    dynamics = mcmc.LangevinDynamicsMove(timestep=2.0 * unit.femtosecond, n_steps=50, reassign_velocities=False)
    move = mcmc.SequenceMove([dynamics, proposal])
    thermodynamic_state = states.ThermodynamicState(system.system, temperature)
    sampler_state = states.SamplerState(system.minimum_positions(1))  # start in the minor well
    context_cache = cache.ContextCache(platform=openmm.Platform.getPlatformByName("Reference"))
    wells = np.empty(n_iterations, dtype=int)
    for i in range(n_iterations):
        move.apply(thermodynamic_state, sampler_state, context_cache)
        wells[i] = system.well_index(sampler_state.positions.value_in_unit(unit.nanometer))[0]
    return wells, proposal.statistics


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames, steps and iterations (~1 min)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    frames_per_well, n_train, n_iterations = (1000, 1500, 150) if args.quick else (2000, 3000, 600)
    system, temperature = DoubleWell2D(), 300.0 * unit.kelvin
    exact = system.exact_populations(temperature).left

    print(f"Training on {6 * frames_per_well} MD frames, 50/50 in each well at {TRAINING_KELVINS} K")
    start = time.time()
    model = train_model(*biased_training_data(system, frames_per_well), n_train)
    print(f"  trained in {time.time() - start:.0f} s")
    samples, _ = model.sample(2000, temperature, generator=torch.Generator().manual_seed(0))
    model_left = np.mean(system.well_index(samples) == 0)

    rows = []
    for n_candidates in (1, 8):
        start = time.time()
        wells, stats = run_chain(system, model, temperature, n_iterations, n_candidates, seed=n_candidates)
        left = (wells[n_iterations // 10 :] == 0).astype(float)
        rows.append((n_candidates, left.mean(), batch_means_standard_error(left, 10), stats, time.time() - start))

    print(f"\nP(left well) at 300 K: exact {exact:.4f}, model alone (unweighted) {model_left:.3f}")
    print(f"{'K':>3} {'P(left)':>9} {'+-':>6} {'accept':>7} {'ESS/(K+1)':>10} {'invalid':>8} {'s/move':>7}")
    for n_candidates, estimate, error, stats, seconds in rows:
        print(f"{n_candidates:>3} {estimate:9.3f} {error:6.3f} {stats.acceptance_rate:7.2f} "
              f"{stats.mean_ess_fraction:10.2f} {stats.invalid_fraction:8.3f} {seconds / n_iterations:7.3f}")


if __name__ == "__main__":
    main()
