"""Augmented parallel tempering of alanine dipeptide, analysed at every temperature and at one never simulated.

The system: openmmtools' AlanineDipeptideVacuum or AlanineDipeptideImplicit
(ff96, OBC1), with ``constraints=None`` (the proposal refuses constrained
Systems). Reference values at 300 K: P(phi > 0) = 0.95 % and dF(phi>0 vs
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
5. writes ``free_energy_surfaces.png`` (phi/psi per temperature),
   ``proposal_statistics.png``, ``summary.json`` and the frozen model
   (``model.pt``, ``sampler.load_exported_model``) into ``--output``.

Run:  python examples/alanine_dipeptide.py [--solvent vacuum|implicit] [--iterations N]
          [--freeze-after N] [--n-candidates K] [--output DIR]   (see --help for the rest)
      the same arguments plus --analyze-only analyse a finished run in --output again.
"""
import argparse
import json
import logging
import os
import sys
import time

import numpy as np
import openmm
import torch
from openmm import unit
from openmmtools import cache, multistate, states, testsystems

from openmm_ddpm.analysis import backbone_dihedrals, basin_free_energy_difference_kt, expected_mh_acceptance, generate_at_temperature, generate_with_densities, log_weight_gap, mbar_expectations, mean_with_correlated_error, population_free_energy_kt, reweight_run_with_model, reweighted_expectation
from openmm_ddpm.moves import StreamingLangevinMove
from openmm_ddpm.app.plots import plot_free_energy_surfaces, plot_proposal_statistics
from openmm_ddpm.multistate import DDPMParallelTemperingSampler, export_proposal_model, load_run, read_ddpm_statistics
from openmm_ddpm.multistate.storage import neighbour_swap_acceptance, read_reduced_potentials, read_state_trajectories

HERE = os.path.dirname(os.path.abspath(__file__))
REFERENCE = os.path.join(HERE, os.pardir, "benchmarks", "results", "alanine_dipeptide_reference_{}.json")
TEMPERATURES = np.geomspace(300.0, 1000.0, 4) * unit.kelvin


def make_molecule(solvent):
    """The openmmtools test system, unconstrained."""
    factory = testsystems.AlanineDipeptideVacuum if solvent == "vacuum" else testsystems.AlanineDipeptideImplicit
    return factory(constraints=None)


def make_sampler(args):
    """The augmented sampler with this example's settings."""
    dynamics = StreamingLangevinMove(stream_stride=args.stream_stride, timestep=1.0 * unit.femtosecond,
                                     collision_rate=1.0 / unit.picosecond, n_steps=args.md_steps,
                                     reassign_velocities=False)
    return DDPMParallelTemperingSampler(
        mcmc_moves=dynamics, number_of_iterations=args.iterations, online_analysis_interval=None,
        representation=dict(kind="internal", relative_sibling_torsions=args.relative_sibling_torsions),
        model=dict(width=args.width, depth=args.depth, n_steps=args.model_steps, sigma_min=args.sigma_min),
        training=dict(train_steps=args.train_steps, min_buffer_frames=2000, stream_stride=args.stream_stride,
                      buffer_capacity=400_000, final_learning_rate=args.final_learning_rate,
                      ema_decay=args.ema_decay, refine_steps=args.refine_steps),
        proposals=dict(target_states=[0], n_candidates=args.n_candidates, min_training_steps=args.min_training_steps,
                       propose_interval=args.propose_interval, seed=args.seed,
                       temperature_factors=tuple(args.temperature_factors)),
        freeze_after=args.freeze_after,
    )


def phi_of(positions_nm, topology):
    """phi (rad) of configurations (n, N, 3) nm, by mdtraj like the free-energy surfaces."""
    phi, _ = backbone_dihedrals(positions_nm, topology)
    return phi[:, 0]


def run_and_count_basin_changes(sampler, topology, n_iterations, freeze_after):
    """Run iteration by iteration; count accepted production moves at 300 K that change the phi basin."""
    counts = {"proposals": 0, "accepted": 0, "basin_changes": 0}
    start = time.perf_counter()
    while sampler.iteration < n_iterations:
        sampler.run(1)
        move = sampler.last_proposal_moves.get(0)
        if move is None or sampler.iteration <= freeze_after:
            continue
        before, after, accepted = move
        counts["proposals"] += 1
        counts["accepted"] += int(accepted)
        phi_before, phi_after = phi_of(np.stack([before, after]), topology)
        counts["basin_changes"] += int(accepted and (phi_before > 0) != (phi_after > 0))
        if sampler.iteration % 25 == 0:
            print(f"iteration {sampler.iteration}/{n_iterations}, {time.perf_counter() - start:.0f} s, "
                  f"production moves at 300 K: {counts}", flush=True)
    return counts


def production_summary(storage, freeze_after, n_candidates):
    """Proposal statistics of the production phase, from storage."""
    statistics = read_ddpm_statistics(storage)
    production = statistics["ddpm_phase"] == 1
    candidates = np.nansum(statistics["ddpm_n_candidates"][production])
    moves = candidates / n_candidates
    return statistics, {
        "production_moves_at_300K": int(moves),
        "acceptance": float(np.nansum(statistics["ddpm_n_accepted"][production]) / max(moves, 1)),
        "mean_ess_fraction": float(np.nanmean(statistics["ddpm_ess_fraction"][production])),
        "invalid_candidate_fraction": float(np.nansum(statistics["ddpm_n_invalid"][production]) / max(candidates, 1)),
        "training_seconds": float(np.nansum(statistics["ddpm_training_seconds"])),
        "proposal_seconds": float(np.nansum(statistics["ddpm_proposal_seconds"])),
    }


def streamed_basin_populations(ddpm, topology):
    """P(phi > 0) per temperature from every frame the MD streamed (the buffer), oldest first.

    Many more frames than storage keeps (one every ``--stream-stride`` MD
    steps instead of one per iteration), so a basin that a short run visits
    rarely is still counted; they are strongly correlated, and the error bar
    (statistical inefficiency) says how much they are worth.
    """
    positions, kelvins = ddpm.buffer.arrays()
    phi = phi_of(positions, topology)
    rows = []
    for kelvin in np.unique(kelvins):
        in_basin = phi[kelvins == kelvin] > 0
        p, p_error, g = mean_with_correlated_error(in_basin)
        rows.append({"temperature_kelvin": float(kelvin), "frames": int(in_basin.size), "p": p, "p_error": p_error,
                     "statistical_inefficiency": g})
    return rows


def basin_estimates(storage, molecule, first_iteration, unsimulated_kelvin, output):
    """Per-state and MBAR P(phi > 0) and dF over the production phase; writes the FES figure."""
    iterations, positions = read_state_trajectories(storage, first_iteration=first_iteration)
    n, n_states = positions.shape[:2]
    phi, psi = backbone_dihedrals(positions.reshape(n * n_states, -1, 3), molecule.topology)
    phi, psi = phi[:, 0].reshape(n, n_states), psi[:, 0].reshape(n, n_states)
    temperatures = [t.value_in_unit(unit.kelvin) for t in TEMPERATURES]
    plot_free_energy_surfaces(phi, psi, temperatures, os.path.join(output, "free_energy_surfaces.png"))
    per_state = [dict(zip(("p", "p_error", "df_kT", "df_error_kT"), basin_free_energy_difference_kt(phi[:, k] > 0)))
                 for k in range(n_states)]
    for k, entry in enumerate(per_state):
        entry["samples_in_phi_positive"] = int(np.sum(phi[:, k] > 0))  # below ~10 the error bars mean little
        entry["samples"] = int(n)
    reduced = read_reduced_potentials(storage, first_iteration=first_iteration)
    mbar = mbar_expectations(reduced, phi > 0, temperatures, [unsimulated_kelvin])
    for entry, mean, error in zip(per_state, mbar["mean"], mbar["error"]):
        entry["p_mbar"], entry["p_mbar_error"] = mean, error
        entry["df_mbar_kT"], entry["df_mbar_error_kT"] = population_free_energy_kt(mean, error)
    unsimulated = {"p_mbar": mbar["mean"][-1], "p_mbar_error": mbar["error"][-1]}
    return {"iterations_used": int(n), "mbar_thinning": mbar["thinning"], "per_state": per_state,
            "unsimulated": unsimulated,
            "neighbour_swap_acceptance": neighbour_swap_acceptance(storage, first_iteration).tolist()}


def generation_at(model, molecule, temperature_kelvin, n_samples, seed, storage, first_iteration):
    """Model samples at a temperature that was not simulated: reweighted alone, and pooled with the run's samples.

    Reweighting the model's samples alone is only as good as the model's
    coverage of every basin; the pooled estimate (the model as one more
    MBAR state next to the run's production samples) keeps the weight the
    run gives a basin the model misses.
    """
    samples = generate_with_densities(model, molecule.system, temperature_kelvin * unit.kelvin, n_samples,
                                      reference_positions=molecule.positions, seed=seed)
    positions, reduced, log_q = samples
    log_weights = -reduced - log_q
    finite = np.isfinite(log_weights)
    log_weights[~finite] = -np.inf
    phi = phi_of(positions, molecule.topology)
    p, p_error, ess = reweighted_expectation(log_weights, phi > 0)
    pooled = reweight_run_with_model(storage, model, molecule.system, first_iteration, temperature_kelvin * unit.kelvin,
                                     samples, lambda x: phi_of(x, molecule.topology) > 0, molecule.positions, seed=seed)
    return {"temperature_kelvin": temperature_kelvin, "n_samples": n_samples, "p_reweighted": p,
            "p_reweighted_error": p_error, "ess": ess, "ess_fraction": ess / n_samples,
            "outside_support_fraction": float(1 - finite.mean()),
            "p_unweighted_model": float(np.mean(phi[finite] > 0)),
            "pooled": {"p": pooled["mean"], "p_error": pooled["error"], **{key: pooled[key] for key in (
                "ess", "model_weight_fraction", "n_model", "run_samples", "run_outside_support", "thinning")}}}


def reference_values(solvent, unsimulated_kelvin):
    """The cached plain-PT reference at 300 K and at the unsimulated temperature, if it exists."""
    path = REFERENCE.format(solvent)
    if not os.path.exists(path):
        return None
    with open(path) as stream:
        reference = json.load(stream)
    values = {"command": reference["command"], "p_300K": reference["p_phi_positive_300K"],
              "p_300K_error": reference["p_phi_positive_300K_error"],
              "df_300K_kT": reference["df_phi_positive_vs_negative_kT"], "df_300K_error_kT": reference["df_error_kT"]}
    kelvins = np.asarray(reference["temperatures_kelvin"])
    match = np.flatnonzero(np.isclose(kelvins, unsimulated_kelvin, atol=0.5))
    if len(match) and "p_phi_positive_per_state" in reference:
        values["p_unsimulated"] = reference["p_phi_positive_per_state"][match[0]]
        values["p_unsimulated_error"] = reference["p_phi_positive_error_per_state"][match[0]]
    return values


def deviation(a, a_error, b, b_error):
    """|a - b| in units of their combined error."""
    return abs(a - b) / np.hypot(a_error, b_error)


def print_report(summary):
    basins, reference = summary["basins"], summary["reference"]
    state0 = basins["per_state"][0]
    print(f"\n300 K, production phase ({basins['iterations_used']} iterations):")
    print(f"  MH acceptance {summary['proposals']['acceptance']:.3f}, ESS/(K+1) {summary['proposals']['mean_ess_fraction']:.3f}, "
          f"outside the domain {summary['proposals']['invalid_candidate_fraction']:.3f}, "
          f"basin-changing accepted moves per proposal {summary['basin_changes_per_proposal']:.4f} "
          f"(counts {summary['basin_change_counts']})")
    print(f"  expected MH acceptance from held-out frames and model samples "
          f"{summary['proposals']['expected_mh_acceptance_from_held_out_frames']:.3f}")
    print(f"  mean log w gap (train - held out) {summary['log_w_gap']:.2f} nats")
    print(f"  dF own samples {state0['df_kT']:.2f} +- {state0['df_error_kT']:.2f} kT "
          f"({state0['samples_in_phi_positive']} samples with phi > 0); "
          f"MBAR {state0['df_mbar_kT']:.2f} +- {state0['df_mbar_error_kT']:.2f} kT")
    if state0["samples_in_phi_positive"] < 10:
        print("  (fewer than 10 samples with phi > 0 at 300 K: run longer before trusting these error bars)")
    if reference is not None:
        print(f"  reference dF {reference['df_300K_kT']:.2f} +- {reference['df_300K_error_kT']:.2f} kT: MBAR deviation "
              f"{deviation(state0['df_mbar_kT'], state0['df_mbar_error_kT'], reference['df_300K_kT'], reference['df_300K_error_kT']):.1f} sigma")
    print("\nP(phi > 0) per temperature from every streamed MD frame (whole run): " + ", ".join(
        f"{row['temperature_kelvin']:.0f} K {row['p']:.4f} +- {row['p_error']:.4f}"
        for row in summary["streamed_frames_p_phi_positive"]))
    generation = summary["generation"]
    print(f"\n{generation['temperature_kelvin']:.1f} K (never simulated): reweighted model P(phi>0) "
          f"{generation['p_reweighted']:.4f} +- {generation['p_reweighted_error']:.4f} "
          f"(ESS {generation['ess']:.0f} of {generation['n_samples']}); unweighted model {generation['p_unweighted_model']:.4f}; "
          f"MBAR {basins['unsimulated']['p_mbar']:.4f} +- {basins['unsimulated']['p_mbar_error']:.4f}")
    if generation["ess"] < 30:
        print("  (ESS below 30: the reweighted estimate and its error bar are not reliable)")
    pooled = generation["pooled"]
    print(f"  pooled with the run's {pooled['run_samples']} thinned production samples (MBAR, the model as one more "
          f"state): {pooled['p']:.4f} +- {pooled['p_error']:.4f}; model samples carry "
          f"{100 * pooled['model_weight_fraction']:.0f} % of the weight")
    if reference is not None and "p_unsimulated" in reference:
        print(f"  reference run at that temperature: {reference['p_unsimulated']:.4f} +- {reference['p_unsimulated_error']:.4f}")


def main(argv=None):
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
    parser.add_argument("--seed", type=int, default=0, help="seed of training and of the proposals")
    parser.add_argument("--output", default="alanine_dipeptide_output")
    parser.add_argument("--analyze-only", action="store_true",
                        help="analyse the finished run in --output again (same run arguments) instead of simulating")
    args = parser.parse_args(argv)
    args.final_learning_rate = args.final_learning_rate or None
    if not 0 < args.freeze_after < args.iterations:
        parser.error("need 0 < --freeze-after < --iterations")
    torch.set_num_threads(1)
    logging.basicConfig(format="%(message)s")
    logging.getLogger("openmm_ddpm.sampler").setLevel(logging.INFO)  # refinement and freeze; every 25th iteration
    if args.platform is None:
        args.platform = "Reference" if args.solvent == "vacuum" else "CPU"  # measured fastest for 22 atoms
    cache.global_context_cache.platform = openmm.Platform.getPlatformByName(args.platform)
    os.makedirs(args.output, exist_ok=True)
    storage = os.path.join(args.output, "run.nc")
    molecule = make_molecule(args.solvent)
    if args.analyze_only:
        model, ddpm, iteration = load_run(storage)  # the newest checkpoint's model and buffer
        summary = analyze(storage, molecule, args, argv, (model, ddpm, iteration), counts=None, wall=float("nan"))
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

    export_proposal_model(sampler.ddpm, os.path.join(args.output, "model.pt"), sampler.iteration)  # reusable alone
    learned = (sampler.ddpm.proposal_model, sampler.ddpm, sampler.iteration)
    summary = analyze(storage, molecule, args, argv, learned, counts, wall)
    return finish(summary, args)


def analyze(storage, molecule, args, argv, learned, counts, wall):
    """Everything after the run, from its storage and the learning state; returns the summary dict.

    ``learned``: (proposal model, OnlineLearner, iteration it belongs to).
    """
    model, ddpm, learned_iteration = learned
    statistics, proposals = production_summary(storage, args.freeze_after, args.n_candidates)
    plot_proposal_statistics(statistics, os.path.join(args.output, "proposal_statistics.png"))
    frames_per_iteration = ddpm.buffer.n_added / learned_iteration
    gap, means, log_weights = log_weight_gap(ddpm, molecule.system, TEMPERATURES[0],
                                             int(frames_per_iteration * args.freeze_after), n_frames=args.gap_frames)
    _, log_weights_model = generate_at_temperature(model, molecule.system, TEMPERATURES[0], args.gap_frames,
                                                   reference_positions=molecule.positions, seed=args.seed)
    # held-out MD frames are samples of pi: the pair average is the equilibrium K = 1 acceptance
    proposals["expected_mh_acceptance_from_held_out_frames"] = expected_mh_acceptance(log_weights["held_out"], log_weights_model)
    return {
        "command": "python " + " ".join([os.path.relpath(__file__, os.path.dirname(HERE))] + (argv if argv is not None else sys.argv[1:])),
        "solvent": args.solvent, "temperatures_kelvin": [t.value_in_unit(unit.kelvin) for t in TEMPERATURES],
        "iterations": args.iterations, "freeze_after": args.freeze_after, "n_candidates": args.n_candidates,
        "md_steps_per_iteration": args.md_steps, "platform": args.platform, "frames_streamed": int(ddpm.buffer.n_added),
        "training_steps": int(ddpm.trainer.n_steps_done), "wall_seconds": wall,
        "proposals": proposals, "basin_change_counts": counts,
        "basin_changes_per_proposal": float("nan") if counts is None else counts["basin_changes"] / max(counts["proposals"], 1),
        "log_w_gap": gap, "mean_log_w_300K": means,
        "generation": generation_at(model, molecule, args.unsimulated_temperature, args.generated_samples, args.seed,
                                    storage, args.freeze_after + 1),
        "basins": basin_estimates(storage, molecule, args.freeze_after + 1, args.unsimulated_temperature, args.output),
        "streamed_frames_p_phi_positive": streamed_basin_populations(ddpm, molecule.topology),
        "reference": reference_values(args.solvent, args.unsimulated_temperature),
    }


def finish(summary, args):
    """Write summary.json and print the report."""
    with open(os.path.join(args.output, "summary.json"), "w") as stream:
        json.dump(summary, stream, indent=2)
    print_report(summary)
    print(f"\nwrote {args.output}/summary.json, free_energy_surfaces.png, proposal_statistics.png")
    return summary


if __name__ == "__main__":
    main()
