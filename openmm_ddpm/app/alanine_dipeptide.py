"""Augmented parallel tempering of alanine dipeptide, analysed at every temperature and at one never simulated.

The system: openmmtools' AlanineDipeptideVacuum or AlanineDipeptideImplicit
(ff96, OBC1), with ``constraints=None``, the setting its reference runs were
made with (``constraints=HBonds`` works too: ``coordinates.constraints``).
Reference values at 300 K: P(phi > 0) = 0.95 % and dF(phi>0 vs
phi<0) = 4.65 kT in vacuum, 0.31 % and 5.77 kT in implicit solvent.

The ladder: 4 replicas, geometric from 300 to 1000 K. At 1000 K the
molecule crosses the phi barrier on the MD time scale (P(phi > 0) = 0.10 in
our vacuum reference run), which is what the model must learn from, and the
model needs every state's frames, so fewer replicas means more data per
state for the same MD. The price is swap acceptance between neighbours
(factor 1.49 in T): 0.13-0.15 measured in vacuum, 0.12-0.15 in implicit solvent, against 0.36
for the 6-replica reference ladder (factor 1.27) in vacuum; add replicas
(``TEMPERATURES``) if round trips matter more than data per state.

What it does:

1. runs ``DDPMParallelTemperingSampler`` with internal coordinates (rotor
   symmetry for the three methyl groups), training online while streaming a
   frame every 10 fs from every replica; the model is frozen after
   ``--freeze-after`` iterations (after ``--refine-steps`` more optimizer
   steps on the whole buffer, if asked), and the production phase proposes
   at 300 K with K candidates per move (from the model at 300 K, or from a
   mixture over ``--temperature-factors``);
2. reports, over the production phase at 300 K: MH acceptance, ESS fraction,
   fraction of candidates outside the domain, accepted moves that change the
   phi basin per proposal, and the train/held-out gap in mean log w;
3. estimates P(phi > 0) and dF at every state from each state's own samples
   (error bars from pymbar's statistical inefficiency) and by MBAR over all
   states, and compares them with the cached plain-PT reference of
   ``benchmarks/alanine_dipeptide_reference.py`` when it exists;
4. generates model samples at a temperature that was never simulated
   (``--unsimulated-temperature``, default 381.7 K, a state of the
   6-replica vacuum reference ladder), weights them by exp(-u) / q, and
   reports the reweighted P(phi > 0) with its ESS, next to MBAR from the
   run, to the pooled estimate (the run's production samples and the model
   samples together by MBAR, the model as one more state: it keeps the
   weight the run gives a basin the model misses) and to the reference run
   at that temperature;
5. writes (``alanine_analysis`` does steps 2-5) ``free_energy_surfaces.png`` (phi/psi per temperature),
   ``proposal_statistics.png``, ``summary.json`` and the frozen model
   (``model.pt``, ``openmm_ddpm.load_exported_model``) into ``--output``.

Run:  python examples/alanine_dipeptide.py   (or python -m openmm_ddpm.app.alanine_dipeptide)
      [--solvent vacuum|implicit] [--iterations N]
          [--freeze-after N] [--n-candidates K] [--output DIR]   (see --help for the rest)
      the same arguments plus --analyze-only analyse a finished run in --output again.
"""
import argparse
import logging
import os
import time

import openmm
import torch
from openmm import unit
from openmmtools import cache, multistate, states, testsystems

from openmm_ddpm.app.alanine_analysis import REFERENCE, TEMPERATURES, analyze, finish, phi_of, scalar_counts
from openmm_ddpm.multistate import (
    DDPMParallelTemperingSampler,
    export_proposal_model,
    load_run,
)

__all__ = ["REFERENCE", "TEMPERATURES", "build_parser", "main", "make_molecule", "make_sampler"]


def make_molecule(solvent):
    """The openmmtools test system, unconstrained."""
    factory = testsystems.AlanineDipeptideVacuum if solvent == "vacuum" else testsystems.AlanineDipeptideImplicit
    return factory(constraints=None)


def make_sampler(args):
    """The augmented sampler with this example's settings."""
    return DDPMParallelTemperingSampler(
        number_of_iterations=args.iterations, online_analysis_interval=None,
        dynamics=dict(timestep=1.0 * unit.femtosecond, collision_rate=1.0 / unit.picosecond, n_steps=args.md_steps,
                      stream_stride=args.stream_stride),
        representation=dict(kind="internal", relative_sibling_torsions=args.relative_sibling_torsions),
        model=dict(width=args.width, depth=args.depth, n_steps=args.model_steps, sigma_min=args.sigma_min),
        training=dict(train_steps=args.train_steps, min_buffer_frames=2000,
                      buffer_capacity=400_000, final_learning_rate=args.final_learning_rate,
                      ema_decay=args.ema_decay, refine_steps=args.refine_steps),
        proposals=dict(target_states=[0], n_candidates=args.n_candidates, min_training_steps=args.min_training_steps,
                       propose_interval=args.propose_interval,
                       temperature_factors=tuple(args.temperature_factors)),
        freeze_after=args.freeze_after, seed=args.seed,
    )


def run_and_count_basin_changes(sampler, topology, n_iterations, freeze_after):
    """Run iteration by iteration; count accepted production moves at 300 K that change the phi basin.

    Also keeps, per production move at 300 K, phi > 0 of the state after it
    and its waste-recycled value over all K + 1 points (``MoveOutcome.recycled``).
    """
    counts = {"proposals": 0, "accepted": 0, "basin_changes": 0, "phi_positive_after": [], "phi_positive_recycled": []}
    start = time.perf_counter()
    while sampler.iteration < n_iterations:
        sampler.run(1)
        outcome = sampler.last_proposal_outcomes.get(0)
        if outcome is None or sampler.iteration <= freeze_after:
            continue
        # the current state (relabelled: hydrogens only, phi unchanged) and the candidates; the next state is the chosen one
        positive = phi_of(outcome.configurations, topology) > 0
        accepted = outcome.chosen > 0
        counts["proposals"] += 1
        counts["accepted"] += int(accepted)
        counts["basin_changes"] += int(accepted and positive[0] != positive[outcome.chosen])
        counts["phi_positive_after"].append(float(positive[outcome.chosen]))
        counts["phi_positive_recycled"].append(outcome.recycled(positive))
        if sampler.iteration % 25 == 0:
            print(f"iteration {sampler.iteration}/{n_iterations}, {time.perf_counter() - start:.0f} s, "
                  f"production moves at 300 K: {scalar_counts(counts)}", flush=True)
    return counts


def build_parser():
    """The command-line options of the workflow."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--solvent", choices=["vacuum", "implicit"], default="vacuum")
    parser.add_argument("--iterations", type=int, default=600)
    parser.add_argument("--freeze-after", type=int, default=300)
    parser.add_argument("--train-steps", type=int, default=100, help="optimizer steps per adaptive iteration")
    parser.add_argument("--min-training-steps", type=int, default=20000, help="before the first proposal")
    parser.add_argument("--n-candidates", type=int, default=1)
    parser.add_argument("--propose-interval", type=int, default=1, help="iterations between proposals at 300 K")
    parser.add_argument("--md-steps", type=int, default=500, help="1 fs Langevin steps per iteration")
    parser.add_argument("--stream-stride", type=int, default=10, help="MD steps between streamed frames")
    parser.add_argument("--unsimulated-temperature", type=float, default=381.67789096181775, help="K")
    parser.add_argument("--model-steps", type=int, default=20, help="Heun steps of the flow map (cost of a proposal)")
    parser.add_argument("--sigma-min", type=float, default=0.02,
                        help="end of the flow map, in standardized units (0.1: expected acceptance 0.19 -> 0.02: 0.30)")
    parser.add_argument("--ema-decay", type=float, default=0.995,
                        help="EMA of the proposal weights (0.999 suits runs of 100k+ optimizer steps)")
    parser.add_argument("--width", type=int, default=256, help="hidden width of the residual MLP")
    parser.add_argument("--depth", type=int, default=3, help="residual blocks")
    parser.add_argument("--final-learning-rate", type=float, default=1e-5,
                        help="learning rate at the freeze, cosine decay from 1e-3 (offline benchmark: expected "
                             "acceptance 0.33 -> 0.43 at 15k steps); 0 keeps it constant")
    parser.add_argument("--refine-steps", type=int, default=0,
                        help="optimizer steps on the whole buffer at the freeze (vacuum: 100k steps, 23 min on one "
                             "CPU core, raised the expected MH acceptance at 300 K from 0.53 to 0.59)")
    parser.add_argument("--temperature-factors", type=float, nargs="+", default=[1.0],
                        help="propose from the model at these multiples of 300 K, mixed (e.g. 1.0 1.27); exact")
    parser.add_argument("--relative-sibling-torsions", action="store_true",
                        help="sibling torsions relative to the first sibling (measured no better, more candidates "
                             "outside the domain)")
    parser.add_argument("--generated-samples", type=int, default=1024)
    parser.add_argument("--gap-frames", type=int, default=200, help="frames per group of the log w gap")
    parser.add_argument("--platform", default=None,
                        help="OpenMM platform of the MD (default: Reference in vacuum, where it is fastest for 22 "
                             "atoms; CPU in implicit solvent)")
    parser.add_argument("--cpu-threads", type=int, default=None,
                        help="threads of the CPU platform (default: OpenMM's); a run with the same --seed repeats "
                             "exactly on the Reference platform, and on CPU with --cpu-threads 1")
    parser.add_argument("--seed", type=int, default=0,
                        help="the run's seed: initial weights, training, proposals, Langevin dynamics, replica mixing")
    parser.add_argument("--output", default="alanine_dipeptide_output")
    parser.add_argument("--analyze-only", action="store_true",
                        help="analyse the finished run in --output again (same run arguments) instead of simulating")
    return parser


def main(argv=None):
    """Run (or with --analyze-only, re-analyse) the workflow; returns the summary dict."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.final_learning_rate = args.final_learning_rate or None
    if not 0 < args.freeze_after < args.iterations:
        parser.error("need 0 < --freeze-after < --iterations")
    torch.set_num_threads(1)
    logging.basicConfig(format="%(message)s")
    logging.getLogger("openmm_ddpm.multistate").setLevel(logging.INFO)  # refinement and freeze; every 25th iteration
    if args.platform is None:
        args.platform = "Reference" if args.solvent == "vacuum" else "CPU"  # measured fastest for 22 atoms
    properties = {"Threads": str(args.cpu_threads)} if args.platform == "CPU" and args.cpu_threads else None
    cache.global_context_cache.set_platform(openmm.Platform.getPlatformByName(args.platform), properties)
    os.makedirs(args.output, exist_ok=True)
    storage = os.path.join(args.output, "run.nc")
    molecule = make_molecule(args.solvent)
    if args.analyze_only:
        run = load_run(storage)  # the newest checkpoint's model and buffer
        summary = analyze(storage, molecule, args, argv, (run.model, run.learner, run.iteration), counts=None,
                          wall=float("nan"))
        return finish(summary, args)
    if os.path.exists(storage):
        raise SystemExit(f"{storage} exists: choose another --output, or add --analyze-only to analyse it again")

    sampler = make_sampler(args)
    sampler.create(states.ThermodynamicState(molecule.system, TEMPERATURES[0]), states.SamplerState(molecule.positions),
                   multistate.MultiStateReporter(storage, checkpoint_interval=50,
                                                 analysis_particle_indices=list(range(molecule.system.getNumParticles()))),
                   temperatures=TEMPERATURES)
    start = time.perf_counter()
    counts = run_and_count_basin_changes(sampler, molecule.topology, args.iterations, args.freeze_after)
    wall = time.perf_counter() - start

    export_proposal_model(sampler.learner, os.path.join(args.output, "model.pt"), sampler.iteration)  # reusable alone
    learned = (sampler.learner.proposal_model, sampler.learner, sampler.iteration)
    summary = analyze(storage, molecule, args, argv, learned, counts, wall)
    return finish(summary, args)


if __name__ == "__main__":
    main()
