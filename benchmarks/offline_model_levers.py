"""Model levers measured offline on a plain run's frames, by importance sampling at 300 K (issue 17).

What stops the augmented sampler on alanine dipeptide is its model of the
rare basin (phi > 0) at 300 K (benchmarks/README.md). This script asks which
change of the *model* fixes that when the data are held fixed: the frames of
one plain parallel-tempering run (the lean comparison's ladder and dynamics,
every atom stored), the paper's workflow (train on REMD frames, then draw).
Each variant trains a fresh default model (128 x 2, the built-in run's
settings) on the same featurized frames with its own training loop, then
draws ``--samples`` configurations at each target temperature with their
exact log q and weighs them by exp(-u) / q. Variants:

- ``dsm_<N>k``: the package's denoising score matching, N thousand steps (cosine decay);
- ``balanced_<s>``: minibatches drawn so that at least a share s of each temperature's
  weight sits on phi > 0 frames (the rare basin upweighted; only the model changes);
- ``tsm_own`` / ``tsm_cross``: a second loss term, target score matching at small noise
  (De Bortoli et al. 2024): for sigma in [sigma_min, 0.2] the denoiser's target is
  z_t + sigma^2 grad log p_T(z_0), with grad log p_T = beta J^T F + grad log|J| from OpenMM's
  forces through the exact inverse of the representation; ``own``: each frame at its own
  temperature (the identity is exact), ``cross``: at a random ladder temperature (right as
  sigma -> 0: the local shape of every state at every frame, hot alpha_L frames teaching 300 K);
- ``flow_steps`` of a variant: the same network sampled with more flow steps (the discrete
  map's density stays exact for any step count).

Per row: ESS (Kish) of all draws, of those in phi > 0 and phi < 0, the share of draws
in phi > 0, quantiles of log w per basin, dF(300 K) and its delta-method error against
the reference (compare_reference_alanine_vacuum.json), seconds. The plain run's own
dF by MBAR is in the result too.

python benchmarks/offline_model_levers.py simulate --seconds 300 --seed 0 --out DIR
python benchmarks/offline_model_levers.py measure --storage DIR/run.nc --variants dsm_20k tsm_own --tag NAME
python benchmarks/offline_model_levers.py merge results/offline_model_levers_A.json ... --tag NAME
"""
import argparse
import dataclasses
import json
import math
import os
import sys
import time

import numpy as np
import openmm
import torch
from openmm import unit
from openmmtools import testsystems
from provenance import write_result  # noqa: E402  (benchmarks/, the script's directory)

import remd_traces
from openmm_ddpm.analysis import (generate_with_densities, mbar_expectations, population_free_energy_kt,
                                  reweighted_expectation)
from openmm_ddpm.app.config import default_config
from openmm_ddpm.app.train import read_temperature_ladder
from openmm_ddpm.multistate.learner import OnlineLearner, cosine_learning_rate
from openmm_ddpm.multistate.storage import read_reduced_potentials

HERE = os.path.dirname(os.path.abspath(__file__))
BOLTZMANN = 0.0083144626  # kJ/mol/K
TSM_SIGMA_MAX = 0.2


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way to train: ``steps``, basin ``balance`` (min share of phi > 0 per temperature, None: off),
    target score matching weight ``tsm`` (0: off) and ``cross`` temperatures, ``flow_steps`` to sample with."""

    steps: int = 20_000
    balance: float = None
    tsm: float = 0.0
    cross: bool = False
    flow_steps: tuple = (10,)


VARIANTS = {
    "dsm_20k": Variant(flow_steps=(10, 20, 40)),
    "dsm_100k": Variant(steps=100_000),
    "balanced_0.05": Variant(balance=0.05),
    "balanced_0.1_50k": Variant(steps=50_000, balance=0.1),
    "balanced_0.5": Variant(balance=0.5),
    "tsm_own": Variant(tsm=1.0),
    "tsm_cross": Variant(tsm=1.0, cross=True),
}


def simulate(seconds, seed, directory):
    """Plain PT of ``remd_traces.SYSTEMS['alanine_vacuum_6']`` for ``seconds``, every atom stored; iterations run.

    ``directory``/wall.npy: the wall time (s) at the end of each iteration, from the run's start.
    """
    os.makedirs(directory, exist_ok=True)
    sampler, reporter, _ = remd_traces.start_sampler(remd_traces.SYSTEMS["alanine_vacuum_6"], "plain", seed, directory,
                                                     every_atom=True)
    start, wall = time.perf_counter(), []
    while time.perf_counter() - start < seconds:
        sampler.run(1)
        wall.append(time.perf_counter() - start)
    reporter.close()
    np.save(os.path.join(directory, "wall.npy"), np.asarray(wall))
    return sampler.iteration


@dataclasses.dataclass
class Frames:
    """Featurized training frames: standardized features ``z`` (n, D), ``kelvin`` (n,), ``in_basin`` (n,) bool,
    the configurations ``positions`` (n, N, 3) nm and their rigid-body ``frames``."""

    z: torch.Tensor
    kelvin: torch.Tensor
    in_basin: np.ndarray
    positions: torch.Tensor
    frames: torch.Tensor


def prepare(storage, first_iteration, seed, last_iteration=None):
    """A learner with its representation fitted on the run's frames (the package's path), and the featurized Frames.

    ``storage``: one run's .nc file, or a list of them (runs of the same ladder; their frames pooled); frames
    ``first_iteration`` to ``last_iteration`` (exclusive; None: to the end) of each.
    """
    storages = [storage] if isinstance(storage, str) else list(storage)
    ladders = [read_temperature_ladder(path) for path in storages]
    ladder = ladders[0]
    positions = np.concatenate([each.positions[first_iteration:last_iteration] for each in ladders])
    molecule = testsystems.AlanineDipeptideVacuum(constraints=None)
    settings = default_config().settings
    n_frames = positions.shape[0] * positions.shape[1]
    settings = dataclasses.replace(settings, seed=seed, training=dataclasses.replace(
        settings.training, min_buffer_frames=1, buffer_capacity=max(400_000, n_frames)))
    learner = OnlineLearner(settings, ladder.system, molecule.positions.value_in_unit(unit.nanometer))
    learner.prepare()
    for k, kelvin in enumerate(ladder.temperatures_kelvin):
        learner.buffer.add(positions[:, k], kelvin)
    learner.train()  # fits the representation, builds the network (and takes its first 25 steps)
    representation, coordinates = learner.representation, learner.representation.coordinates
    buffered, kelvins = learner.buffer.arrays()
    chosen = coordinates.relabel(buffered.astype(np.float64), learner.relabel_rng)
    z, _ = representation.forward(chosen)
    keep = coordinates.in_domain(representation.standardizer.inverse(z)[0])
    frames = Frames(z[keep], torch.as_tensor(kelvins[keep], dtype=torch.float64),
                    remd_traces.phi_positive(chosen[keep].numpy()), chosen[keep], coordinates.frame(chosen[keep]))
    return learner, ladder, molecule, frames


def score_parts(representation, system, frames, chunk=4096):
    """(J^T F, grad log|J|) per frame, (n, D) each: grad_z log p_T(z) = beta J^T F + grad log|J| at any T.

    F are OpenMM's forces (kJ/mol/nm), J the Jacobian of positions with respect to the model features
    at each frame's own rigid-body frame.
    """
    context = openmm.Context(system, openmm.VerletIntegrator(1.0), openmm.Platform.getPlatformByName("Reference"))
    forces = np.empty(frames.positions.shape)
    for i, x in enumerate(frames.positions.numpy()):
        context.setPositions(x)
        forces[i] = context.getState(getForces=True).getForces(asNumpy=True).value_in_unit(
            unit.kilojoule_per_mole / unit.nanometer)
    forces = torch.as_tensor(forces)
    energy_part, logdet_part = [], []
    for start in range(0, len(frames.z), chunk):
        z = frames.z[start:start + chunk].clone().requires_grad_(True)
        positions, logdet, _ = representation.inverse(z, frames.frames[start:start + chunk])
        energy_part.append(torch.autograd.grad((positions * forces[start:start + chunk]).sum(), z, retain_graph=True)[0])
        logdet_part.append(torch.autograd.grad(logdet.sum(), z)[0])
    return torch.cat(energy_part), torch.cat(logdet_part)


def check_scores(representation, system, frames, scores, rows=(0, 100, 5000), epsilon=1e-5, seed=1):
    """Largest |analytic - central finite difference| of d/dv log p_T(z) along random v at a few frames (nats per unit).

    log p_T(z) = -U(x(z)) / kT + log|J(z)| (+ a constant), T each frame's own temperature.
    """
    context = openmm.Context(system, openmm.VerletIntegrator(1.0), openmm.Platform.getPlatformByName("Reference"))
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for i in rows:
        beta = 1.0 / (BOLTZMANN * float(frames.kelvin[i]))
        direction = torch.randn(frames.z.shape[1], generator=generator, dtype=torch.float64)

        def log_p(z):
            positions, logdet, _ = representation.inverse(z[None], frames.frames[i:i + 1])
            context.setPositions(positions[0].detach().numpy())
            energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
            return -beta * energy + float(logdet[0])

        numeric = (log_p(frames.z[i] + epsilon * direction) - log_p(frames.z[i] - epsilon * direction)) / (2 * epsilon)
        analytic = float(((beta * scores[0][i] + scores[1][i]) * direction).sum())
        worst = max(worst, abs(numeric - analytic))
    return worst


def balanced_weights(frames, share):
    """Minibatch weights giving phi > 0 frames at least ``share`` of each temperature's total."""
    weights = np.zeros(len(frames.in_basin))
    kelvin = frames.kelvin.numpy()
    for temperature in np.unique(kelvin):
        at = kelvin == temperature
        n_in, n_out = frames.in_basin[at].sum(), (~frames.in_basin[at]).sum()
        s = max(share, n_in / (n_in + n_out)) if n_in > 0 else 0.0
        weights[at & frames.in_basin] = s / max(n_in, 1)
        weights[at & ~frames.in_basin] = (1 - s) / max(n_out, 1)
    return torch.as_tensor(weights)


def train(learner, frames, variant, ladder_kelvin, scores=None):
    """``variant.steps`` optimizer steps of the EDM loss (+ the TSM term); the learner's proposal model refreshed."""
    trainer, settings = learner.trainer, learner.settings.training
    diffusion, generator = trainer.diffusion, trainer.generator
    dtype = diffusion.dtype
    z, kelvin = frames.z.to(dtype), frames.kelvin.to(dtype)
    ladder = torch.as_tensor(ladder_kelvin, dtype=dtype)
    weights = None if variant.balance is None else balanced_weights(frames, variant.balance)
    low, high = math.log(diffusion.settings.sigma_min), math.log(TSM_SIGMA_MAX)
    sigma_data = diffusion.settings.sigma_data
    final = settings.learning_rate / 100
    losses = []
    for step in range(variant.steps):
        if step % 1000 == 0:
            trainer.set_learning_rate(cosine_learning_rate(step / variant.steps, settings.learning_rate, final))
        index = (torch.randint(len(z), (trainer.batch_size,), generator=generator) if weights is None
                 else torch.multinomial(weights, trainer.batch_size, replacement=True, generator=generator))
        loss = diffusion.loss(z[index], kelvin[index], generator=generator)
        if variant.tsm > 0:
            j = torch.randint(len(z), (trainer.batch_size,), generator=generator)
            temperature = ladder[torch.randint(len(ladder), (len(j),), generator=generator)] if variant.cross else kelvin[j]
            sigma = torch.exp(low + (high - low) * torch.rand(len(j), generator=generator, dtype=dtype))
            score = scores[0][j].to(dtype) / (BOLTZMANN * temperature).unsqueeze(-1) + scores[1][j].to(dtype)
            noisy = z[j] + sigma.unsqueeze(-1) * torch.randn(z[j].shape, generator=generator, dtype=dtype)
            target = noisy + sigma.unsqueeze(-1) ** 2 * score
            weight = (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
            loss = loss + variant.tsm * (weight * ((diffusion.denoise(noisy, sigma, temperature) - target) ** 2)
                                         .sum(-1)).mean()
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(diffusion.network.parameters(), settings.gradient_clip)
        trainer.optimizer.step()
        trainer._update_ema()
        losses.append(float(loss.detach()))
    learner.refresh_proposal_model()
    return float(np.mean(losses[-1000:]))


def importance_sample(learner, system, molecule, kelvin, flow_steps, n_samples, seed):
    """One row: draws at ``kelvin`` with ``flow_steps`` flow steps, weighed to the Boltzmann distribution there."""
    model = learner.proposal_model
    model.diffusion.settings = dataclasses.replace(model.diffusion.settings, n_steps=flow_steps)
    start = time.perf_counter()
    positions, reduced, log_q = generate_with_densities(model, system, kelvin * unit.kelvin, n_samples,
                                                        molecule.positions, batch_size=64, seed=seed)
    seconds = time.perf_counter() - start
    log_w = -reduced - log_q
    finite, basin = np.isfinite(log_w), remd_traces.phi_positive(positions)
    estimate = reweighted_expectation(np.where(finite, log_w, -np.inf), basin)
    df, df_error = population_free_energy_kt(estimate.mean, estimate.error)
    row = {"temperature_kelvin": kelvin, "flow_steps": flow_steps, "samples": n_samples, "seconds": seconds,
           "ess": estimate.ess, "drawn_phi_positive": float(basin.mean()), "outside_support": float(1 - finite.mean()),
           "p_phi_positive": estimate.mean, "df_kT": df, "df_error_kT": df_error}
    for name, mask in (("phi_positive", basin), ("phi_negative", ~basin)):
        chosen = finite & mask
        row[f"ess_{name}"] = reweighted_expectation(np.where(chosen, log_w, -np.inf), basin).ess
        row[f"log_w_5_50_95_{name}"] = np.percentile(log_w[chosen], [5, 50, 95]).tolist() if chosen.any() else None
    return row


def plain_run_arrays(storage):
    """(reduced potentials (n, K, K), phi > 0 of each state's configuration (n, K) as 0/1, temperatures K) of a run."""
    reduced = read_reduced_potentials(storage)
    ladder = read_temperature_ladder(storage)
    n = min(len(reduced), len(ladder.positions))
    basin = np.stack([remd_traces.phi_positive(ladder.positions[:n, k]) for k in range(len(ladder.temperatures_kelvin))],
                     axis=1).astype(float)
    return reduced[:n], basin, ladder.temperatures_kelvin


def plain_run_df(storage, first_iteration, last_iteration=None, arrays=None):
    """dF(300 K) (kT) of the plain run itself by MBAR over its states (up to ``last_iteration``), and its error.

    ``arrays``: ``plain_run_arrays(storage)`` when already read (reading dominates the cost).
    """
    reduced, basin, kelvins = plain_run_arrays(storage) if arrays is None else arrays
    estimate = mbar_expectations(reduced[first_iteration:last_iteration], basin[first_iteration:last_iteration], kelvins)
    return population_free_energy_kt(estimate.mean[0], estimate.error[0])


def measure(storage, variants, targets, n_samples, first_iteration, seed):
    """Rows of every variant on one storage."""
    torch.set_num_threads(1)
    rows = []
    for name in variants:
        variant = VARIANTS[name]
        start = time.perf_counter()
        learner, ladder, molecule, frames = prepare(storage, first_iteration, seed)
        scores = score_parts(learner.representation, ladder.system, frames) if variant.tsm > 0 else None
        if scores is not None:
            print(f"score check: largest |analytic - finite difference| "
                  f"{check_scores(learner.representation, ladder.system, frames, scores):.1e} nats", flush=True)
        prepared = time.perf_counter()
        loss = train(learner, frames, variant, ladder.temperatures_kelvin, scores)
        trained = time.perf_counter()
        for i, kelvin in enumerate(targets):
            for flow_steps in variant.flow_steps:
                row = {"variant": name, **dataclasses.asdict(variant),
                       **importance_sample(learner, ladder.system, molecule, kelvin, flow_steps, n_samples, seed + 1 + i)}
                row.update(frames=len(frames.z),
                           share_phi_positive_300K=float(frames.in_basin[frames.kelvin.numpy() == ladder.temperatures_kelvin[0]].mean()),
                           prepare_seconds=prepared - start, train_seconds=trained - prepared, final_loss=loss)
                rows.append(row)
                print(json.dumps({k: row[k] for k in ("variant", "temperature_kelvin", "flow_steps", "ess",
                                                        "ess_phi_positive", "drawn_phi_positive", "df_kT", "df_error_kT")}),
                      flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("simulate")
    run.add_argument("--seconds", type=float, default=300.0)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--out", required=True)
    levers = commands.add_parser("measure")
    levers.add_argument("--storage", required=True)
    levers.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=sorted(VARIANTS))
    levers.add_argument("--targets", type=float, nargs="+", default=[300.0], help="K")
    levers.add_argument("--samples", type=int, default=4096)
    levers.add_argument("--first-iteration", type=int, default=200)
    levers.add_argument("--seed", type=int, default=0)
    levers.add_argument("--tag", required=True)
    merge = commands.add_parser("merge")
    merge.add_argument("parts", nargs="+")
    merge.add_argument("--tag", required=True)
    args = parser.parse_args(argv)
    if args.command == "simulate":
        print("iterations", simulate(args.seconds, args.seed, args.out))
        return
    path = os.path.join(HERE, "results", f"offline_model_levers_{args.tag}.json")
    if args.command == "merge":
        parts = [json.load(open(part)) for part in args.parts]
        rows = [{"storage": part["storage"], **row} for part in parts for row in part["rows"]]
        write_result(path, {"reference_df_kT": parts[0]["reference_df_kT"], "parts": parts, "rows": rows}, __file__, argv)
        return
    with open(os.path.join(HERE, "results", "compare_reference_alanine_vacuum.json")) as stream:
        reference = json.load(stream)
    plain_df, plain_error = plain_run_df(args.storage, args.first_iteration)
    rows = measure(args.storage, args.variants, args.targets, args.samples, args.first_iteration, args.seed)
    write_result(path, {"storage": os.path.basename(os.path.dirname(os.path.abspath(args.storage))),
                        "reference_df_kT": reference.get("df_kT"), "plain_run_df_kT": plain_df,
                        "plain_run_df_error_kT": plain_error, "rows": rows}, __file__, argv)


if __name__ == "__main__":
    sys.exit(main())
