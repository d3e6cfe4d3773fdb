"""Benchmark: what the model learns from a run's streamed frames, measured by expected MH acceptance.

Takes the replay buffer of a finished augmented run (its newest checkpoint),
keeps the oldest frames for training and the newest as held out, trains a
fresh model with the given representation and network settings exactly as
the online trainer does (``OnlineLearner.train``), and every ``--eval-every``
optimizer steps measures at the target temperature:

- the expected independence-MH acceptance (K = 1) of the frozen EMA model,
  averaged over every pair of held-out MD frame x ~ pi and model sample
  y ~ q (``analysis.expected_mh_acceptance``): what a chain would count,
  without running one;
- the ESS fraction of the model samples' weights, and the fraction of
  samples outside the domain;
- mean log w on training and on held-out frames (their gap: overfitting).

This separates the model's quality from the cost of MD, so a change of
representation or training can be judged in minutes, not hours.

python benchmarks/alanine_dipeptide_offline.py --from-run RUN/run.nc --tag NAME
    [--train-steps 20000] [--eval-every 5000] [--absolute-torsions] [--width 256] [--depth 3]
    [--target-fraction F] [--sigma-min 0.02] [--final-learning-rate LR] [--ema-decay D]

Writes benchmarks/results/alanine_dipeptide_offline_<tag>.json.
"""
import argparse
import dataclasses
import json
import os
import platform
import sys
import time

import numpy as np
import openmm
import torch
from openmm import unit
from openmmtools import states
from provenance import command_line, write_result  # noqa: E402  (benchmarks/, the script's directory)

from openmm_ddpm import __version__
from openmm_ddpm.analysis import (
    expected_mh_acceptance,
    generate_at_temperature,
    reweighted_expectation,
)
from openmm_ddpm.moves import reduced_potentials
from openmm_ddpm.multistate import OnlineLearner, load_run

HERE = os.path.dirname(os.path.abspath(__file__))


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from-run", required=True, help="storage (run.nc) of a finished DDPM run")
    parser.add_argument("--tag", required=True, help="name of the result file")
    parser.add_argument("--temperature", type=float, default=300.0, help="target temperature, K")
    parser.add_argument("--held-out-fraction", type=float, default=0.2)
    parser.add_argument("--train-steps", type=int, default=20000)
    parser.add_argument("--eval-every", type=int, default=5000)
    parser.add_argument("--eval-frames", type=int, default=128, help="held-out frames per evaluation (half as many training frames, twice as many model samples)")
    parser.add_argument("--absolute-torsions", action="store_true", help="plain Z-matrix torsions (no sibling shear)")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--sigma-min", type=float, default=0.02)
    parser.add_argument("--temperature-max-frequency", type=float, default=0.25,
                        help="highest frequency of the temperature embedding, cycles per doubling of T")
    parser.add_argument("--unsimulated-temperature", type=float, default=381.67789096181775,
                        help="K; the ESS fraction of model samples there measures interpolation in T")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--ema-decay", type=float, default=0.995)
    parser.add_argument("--final-learning-rate", type=float, default=None,
                        help="cosine decay of the learning rate to this value at --train-steps (default: constant)")
    parser.add_argument("--target-fraction", type=float, default=None,
                        help="share of each minibatch drawn from target-temperature frames (default: as streamed)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def split_buffer(buffer, held_out_fraction):
    """(train positions, train temperatures), (held-out positions, held-out temperatures), oldest first."""
    positions, temperatures = buffer.arrays()
    cut = int(round(len(positions) * (1.0 - held_out_fraction)))
    return (positions[:cut], temperatures[:cut]), (positions[cut:], temperatures[cut:])


def fresh_learner(source, args, train):
    """An OnlineLearner with the source run's settings, changed as asked, holding the training frames."""
    old = source.settings
    settings = dataclasses.replace(
        old,
        representation=dataclasses.replace(old.representation, relative_sibling_torsions=not args.absolute_torsions),
        model=dataclasses.replace(old.model, width=args.width, depth=args.depth, sigma_min=args.sigma_min, device="cpu",
                                  temperature_max_frequency=args.temperature_max_frequency),
        training=dataclasses.replace(old.training, buffer_capacity=len(train[0]), learning_rate=args.learning_rate,
                                     ema_decay=args.ema_decay, final_learning_rate=args.final_learning_rate,
                                     target_fraction=args.target_fraction),
        seed=args.seed)
    learner = OnlineLearner(settings, source.system, source.reference_positions, (args.temperature,))
    learner.buffer.add(*train)
    return learner


def mean_log_weight(model, thermodynamic_state, frames, rng):
    """log w = -u - log q of MD frames after a random valid relabelling."""
    frames = model.relabel(frames.astype(np.float64), rng)
    sampler_state = states.SamplerState(unit.Quantity(frames[0], unit.nanometer))
    return -reduced_potentials(thermodynamic_state, sampler_state, frames) - model.log_prob(frames, thermodynamic_state.temperature)


def outside_domain_breakdown(model, temperature_kelvin, n, seed, reference_positions):
    """Where model samples leave the domain: share of n samples failing each condition.

    Keys: bond, angle, rotor_window (the first hydrogen of a symmetric group outside
    its window W), torsion_window (any other torsion outside its window), chirality
    (a rebuilt configuration whose chiral centre flipped).
    A sample can fail several.
    """
    coordinates = model.representation.coordinates
    generator = torch.Generator().manual_seed(seed)
    flow = model.diffusion.sample_flow(n, temperature_kelvin, generator=generator, with_log_prob=False)
    features, _ = model.representation.standardizer.inverse(flow.x.to(torch.float64))
    violations = coordinates.domain_violations(features)
    outside = violations["torsion"]
    rotor_rows = torch.zeros(outside.shape[1], dtype=torch.bool)
    rotor_rows[[rows[0] for _, rows in coordinates.rotor_groups]] = True
    positions, _ = coordinates.inverse(features, coordinates.frame(reference_positions).expand(n, -1))
    return {
        "bond": float(violations["bond"].double().mean()),
        "angle": float(violations["angle"].double().mean()),
        "rotor_window": float(outside[:, rotor_rows].any(-1).double().mean()),
        "torsion_window": float(outside[:, ~rotor_rows].any(-1).double().mean()),
        "torsion_window_rows": {str(row): float(outside[:, row].double().mean())
                                for row in torch.nonzero(outside.any(0)).ravel().tolist()},
        # positions are NaN outside the domain; chirality counts only rebuilt configurations
        "chirality": float((torch.isfinite(positions).all(dim=(-2, -1))
                            & ~coordinates.valid_positions(positions)).double().mean()),
    }


def ess_fraction_at(model, system, temperature_kelvin, n, reference_positions, seed):
    """ESS / n of n model samples at a temperature, weighted by exp(-u) / q."""
    _, log_w = generate_at_temperature(model, system, temperature_kelvin * unit.kelvin, n, reference_positions, seed=seed)
    estimate = reweighted_expectation(log_w, np.zeros(n))
    _, _, ess = estimate.mean, estimate.error, estimate.ess
    return ess / n


def evaluate(learner, system, temperature_kelvin, train, held_out, n_frames, rng, unsimulated_kelvin):
    """Expected acceptance, ESS fraction, invalid fraction and log w of train/held-out frames."""
    temperature = temperature_kelvin * unit.kelvin
    thermodynamic_state = states.ThermodynamicState(system, temperature)
    picks = {}
    for name, (positions, kelvins), n in (("train", train, n_frames // 2), ("held_out", held_out, n_frames)):
        at_target = np.flatnonzero(np.isclose(kelvins, temperature_kelvin))
        picks[name] = positions[np.sort(rng.choice(at_target, size=min(n, len(at_target)), replace=False))]
    model = learner.proposal_model
    log_w = {name: mean_log_weight(model, thermodynamic_state, frames, rng) for name, frames in picks.items()}
    _, log_w_model = generate_at_temperature(model, system, temperature, 2 * n_frames, picks["held_out"][0],
                                             seed=int(rng.integers(2**31)))
    finite = log_w_model[np.isfinite(log_w_model)]
    w = np.exp(finite - finite.max()) if len(finite) else np.zeros(1)
    return {
        "expected_mh_acceptance": expected_mh_acceptance(log_w["held_out"], log_w_model),
        "ess_fraction": float(w.sum() ** 2 / (w**2).sum() / len(log_w_model)),
        "outside_domain_fraction": float(np.mean(~np.isfinite(log_w_model))),
        "mean_log_w_train": float(np.nanmean(np.where(np.isfinite(log_w["train"]), log_w["train"], np.nan))),
        "mean_log_w_held_out": float(np.nanmean(np.where(np.isfinite(log_w["held_out"]), log_w["held_out"], np.nan))),
        "log_w_std_held_out": float(np.nanstd(np.where(np.isfinite(log_w["held_out"]), log_w["held_out"], np.nan))),
        "ess_fraction_unsimulated": ess_fraction_at(model, system, unsimulated_kelvin, 4 * n_frames,
                                                    picks["held_out"][0], int(rng.integers(2**31))),
        "outside_domain_breakdown": outside_domain_breakdown(model, temperature_kelvin, 4 * n_frames,
                                                             int(rng.integers(2**31)), learner.reference_positions),
    }


def source_run_command(storage):
    """The command that made the source run, from the example's summary.json beside it (None if absent)."""
    summary = os.path.join(os.path.dirname(os.path.abspath(storage)), "summary.json")
    if not os.path.exists(summary):
        return None
    with open(summary) as stream:
        return json.load(stream).get("command")


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(1)
    run = load_run(args.from_run)
    _, source, iteration = run.model, run.learner, run.iteration
    train, held_out = split_buffer(source.buffer, args.held_out_fraction)
    learner = fresh_learner(source, args, train)
    rng = np.random.default_rng(args.seed)
    history, start, losses = [], time.perf_counter(), []
    steps_per_round = learner.settings.training.train_steps
    while learner.trainer is None or learner.trainer.n_steps_done < args.train_steps:
        done = 0 if learner.trainer is None else learner.trainer.n_steps_done
        losses.append(learner.train(progress=done / args.train_steps))
        done = learner.trainer.n_steps_done
        if done % args.eval_every < steps_per_round or done >= args.train_steps:
            learner.refresh_proposal_model()
            row = {"train_steps": done, "wall_s": round(time.perf_counter() - start, 1),
                   "loss": float(np.mean(losses[-20:]))}
            row.update(evaluate(learner, source.system, args.temperature, train, held_out, args.eval_frames, rng,
                                args.unsimulated_temperature))
            history.append(row)
            print(json.dumps(row), flush=True)
    result = {
        "command": command_line(__file__, argv),
        "source_run_iteration": iteration,
        "source_run_command": source_run_command(args.from_run),
        "frames": {"train": len(train[0]), "held_out": len(held_out[0]),
                   "train_at_target": int(np.isclose(train[1], args.temperature).sum())},
        "settings": {name: value.to_dict() for name, value in learner.settings.items()},
        "history": history,
        "package_version": __version__, "torch": torch.__version__, "openmm": openmm.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads 1",
    }
    output = os.path.join(HERE, "results", f"alanine_dipeptide_offline_{args.tag}.json")
    write_result(output, result)
    return result


if __name__ == "__main__":
    main()
