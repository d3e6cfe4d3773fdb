"""Analysis of an alanine dipeptide run: proposal statistics, basin populations, generation, report.

Everything after the run of ``alanine_dipeptide``, from its storage and
learning state: the production phase's proposal statistics and the
train/held-out log w gap at 300 K; P(phi > 0) and dF per state and by MBAR;
reweighted and pooled estimates at a never-simulated temperature; the
cached plain-PT reference for comparison; the printed report.
"""
import json
import os
import sys
from pathlib import Path

import numpy as np
from openmm import unit

from openmm_ddpm.analysis import (
    backbone_dihedrals,
    batch_means_standard_error,
    basin_free_energy_difference_kt,
    expected_mh_acceptance,
    generate_at_temperature,
    generate_with_densities,
    log_weight_gap,
    mbar_expectations,
    mean_with_correlated_error,
    population_free_energy_kt,
    reweight_run_with_model,
    reweighted_expectation,
)
from openmm_ddpm.app.plots import plot_free_energy_surfaces, plot_proposal_statistics
from openmm_ddpm.multistate.storage import (
    neighbour_swap_acceptance,
    read_ddpm_statistics,
    read_reduced_potentials,
    read_state_trajectories,
)

REFERENCE = str(Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "alanine_dipeptide_reference_{}.json")
TEMPERATURES = np.geomspace(300.0, 1000.0, 4) * unit.kelvin


def phi_of(positions_nm, topology):
    """phi (rad) of configurations (n, N, 3) nm, by mdtraj like the free-energy surfaces."""
    phi, _ = backbone_dihedrals(positions_nm, topology)
    return phi[:, 0]


def production_summary(storage):
    """Proposal statistics of the production phase, from storage (``storage.production_proposal_summary``)."""
    from openmm_ddpm.multistate.storage import production_proposal_summary

    statistics = read_ddpm_statistics(storage)
    summary = production_proposal_summary(statistics)
    return statistics, {"production_moves_at_300K": summary.pop("moves"), **summary}


def streamed_basin_populations(learner, topology):
    """P(phi > 0) per temperature from every frame the MD streamed (the buffer), oldest first.

    Many more frames than storage keeps (one every ``--stream-stride`` MD
    steps instead of one per iteration), so a basin that a short run visits
    rarely is still counted; they are strongly correlated, and the error bar
    (statistical inefficiency) says how much they are worth.
    """
    positions, kelvins = learner.buffer.arrays()
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
    for entry, mean, error in zip(per_state, mbar.mean, mbar.error):
        entry["p_mbar"], entry["p_mbar_error"] = mean, error
        entry["df_mbar_kT"], entry["df_mbar_error_kT"] = population_free_energy_kt(mean, error)
    unsimulated = {"p_mbar": mbar.mean[-1], "p_mbar_error": mbar.error[-1]}
    return {"iterations_used": int(n), "mbar_thinning": mbar.thinning, "per_state": per_state,
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
    estimate = reweighted_expectation(log_weights, phi > 0)
    pooled = reweight_run_with_model(storage, model, molecule.system, first_iteration, temperature_kelvin * unit.kelvin,
                                     samples, lambda x: phi_of(x, molecule.topology) > 0, molecule.positions, seed=seed)
    return {"temperature_kelvin": temperature_kelvin, "n_samples": n_samples, "p_reweighted": estimate.mean,
            "p_reweighted_error": estimate.error, "ess": estimate.ess, "ess_fraction": estimate.ess / n_samples,
            "outside_support_fraction": float(1 - finite.mean()),
            "p_unweighted_model": float(np.mean(phi[finite] > 0)),
            "pooled": {"p": pooled.mean, "p_error": pooled.error, **{key: getattr(pooled, key) for key in (
                "ess", "model_weight_fraction", "n_model", "run_samples", "run_outside_support", "thinning")}}}


def scalar_counts(counts):
    """The move counts without the per-move series (for printing and the summary)."""
    return {key: value for key, value in counts.items() if not isinstance(value, list)}


def recycled_estimates(counts):
    """P(phi > 0) at 300 K over the production moves: from the states after each move, and waste-recycled.

    Both estimate the same expectation; the recycled one averages over every
    candidate with its probability of becoming the next state. Errors by
    batch means (10 batches).
    """
    if counts is None:
        return None
    by_name = {name: np.asarray(counts[f"phi_positive_{name}"], dtype=float) for name in ("after", "recycled")}
    if len(by_name["after"]) < 20:
        return None
    result = {}
    for name, series in by_name.items():
        result[f"p_{name}"] = float(series.mean())
        result[f"p_{name}_error"] = batch_means_standard_error(series, n_batches=10)
    return result


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
    recycled = summary.get("recycled_p_phi_positive_300K")
    if recycled is not None:
        print(f"  P(phi > 0) over the moves: states after them {recycled['p_after']:.4f} +- {recycled['p_after_error']:.4f}, "
              f"waste-recycled over every candidate {recycled['p_recycled']:.4f} +- {recycled['p_recycled_error']:.4f}")
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


def analyze(storage, molecule, args, argv, learned, counts, wall):
    """Everything after the run, from its storage and the learning state; returns the summary dict.

    ``learned``: (proposal model, OnlineLearner, iteration it belongs to).
    """
    model, learner, learned_iteration = learned
    statistics, proposals = production_summary(storage)
    plot_proposal_statistics(statistics, os.path.join(args.output, "proposal_statistics.png"))
    frames_per_iteration = learner.buffer.n_added / learned_iteration
    gap, means, log_weights = log_weight_gap(learner, molecule.system, TEMPERATURES[0],
                                             int(frames_per_iteration * args.freeze_after), n_frames=args.gap_frames)
    _, log_weights_model = generate_at_temperature(model, molecule.system, TEMPERATURES[0], args.gap_frames,
                                                   reference_positions=molecule.positions, seed=args.seed)
    # held-out MD frames are samples of pi: the pair average is the equilibrium K = 1 acceptance
    proposals["expected_mh_acceptance_from_held_out_frames"] = expected_mh_acceptance(log_weights["held_out"], log_weights_model)
    return {
        "command": "python -m openmm_ddpm.app.alanine_dipeptide " + " ".join(argv if argv is not None else sys.argv[1:]),
        "solvent": args.solvent, "temperatures_kelvin": [t.value_in_unit(unit.kelvin) for t in TEMPERATURES],
        "iterations": args.iterations, "freeze_after": args.freeze_after, "n_candidates": args.n_candidates,
        "md_steps_per_iteration": args.md_steps, "platform": args.platform, "frames_streamed": int(learner.buffer.n_added),
        "training_steps": int(learner.trainer.n_steps_done), "wall_seconds": wall,
        "proposals": proposals, "recycled_p_phi_positive_300K": recycled_estimates(counts),
        "basin_change_counts": None if counts is None else scalar_counts(counts),
        "basin_changes_per_proposal": float("nan") if counts is None else counts["basin_changes"] / max(counts["proposals"], 1),
        "log_w_gap": gap, "mean_log_w_300K": means,
        "generation": generation_at(model, molecule, args.unsimulated_temperature, args.generated_samples, args.seed,
                                    storage, args.freeze_after + 1),
        "basins": basin_estimates(storage, molecule, args.freeze_after + 1, args.unsimulated_temperature, args.output),
        "streamed_frames_p_phi_positive": streamed_basin_populations(learner, molecule.topology),
        "reference": reference_values(args.solvent, args.unsimulated_temperature),
    }


def finish(summary, args):
    """Write summary.json and print the report."""
    with open(os.path.join(args.output, "summary.json"), "w") as stream:
        json.dump(summary, stream, indent=2)
    print_report(summary)
    print(f"\nwrote {args.output}/summary.json, free_energy_surfaces.png, proposal_statistics.png")
    return summary
