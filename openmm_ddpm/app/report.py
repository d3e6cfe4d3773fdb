"""``openmm-ddpm analyze DIR``: the report of a run directory (``report.md``, ``summary.json`` and PNG plots).

What it holds, from the storage alone (the production phase, after
``freeze_after``, or the second half of the run when there is none):

- for peptides (a topology with backbone phi): the phi/psi free-energy
  surface per temperature, and per state P(phi > 0) and dF(phi > 0 vs
  phi < 0) from that state's own samples and by MBAR over all states,
  with error bars (``openmm_ddpm.analysis``);
- the neighbour swap acceptance of the ladder and the replicas' round trips;
- acceptance, ESS / (K + 1) and training loss over the run
  (``proposal_statistics.png``) and the time split (training, proposals,
  the rest).
"""
import json
import os
from dataclasses import asdict, dataclass

import numpy as np

from openmm_ddpm.app.config import ConfigError, load_config
from openmm_ddpm.app.run import CONFIG_NAME, STORAGE_NAME, build_system


@dataclass
class Report:
    """The numbers of ``report.md``; ``per_state`` rows hold P(phi > 0) and dF (kT) by state and by MBAR."""

    iterations: int
    first_iteration: int
    temperatures_kelvin: list
    neighbour_swap_acceptance: list
    round_trips: list
    production_acceptance: float
    production_ess_fraction: float
    training_seconds: float
    proposal_seconds: float
    per_state: list


def analyze(directory):
    """Write ``report.md``, ``summary.json`` and the plots into ``directory``; return the ``Report``."""
    from openmm_ddpm.app.plots import plot_proposal_statistics
    from openmm_ddpm.multistate.storage import neighbour_swap_acceptance, read_ddpm_statistics, replica_round_trips

    storage = os.path.join(directory, STORAGE_NAME)
    if not os.path.exists(storage) or not os.path.exists(os.path.join(directory, CONFIG_NAME)):
        raise ConfigError(f"{directory} holds no openmm-ddpm run ({STORAGE_NAME} and {CONFIG_NAME}): give the --out of a run")
    config = load_config(os.path.join(directory, CONFIG_NAME))
    statistics = read_ddpm_statistics(storage)
    n_iterations = len(statistics["ddpm_phase"]) - 1  # indexed by iteration, 0 included
    freeze = config.settings.freeze_after
    first = freeze + 1 if freeze is not None and freeze < n_iterations else n_iterations // 2 + 1
    production = statistics["ddpm_phase"] == 1
    moves = production & (statistics["ddpm_n_candidates"] > 0)
    n_targets = len(config.settings.proposals.target_states)
    report = Report(
        iterations=n_iterations, first_iteration=first, temperatures_kelvin=list(config.temperatures_kelvin),
        neighbour_swap_acceptance=neighbour_swap_acceptance(storage, first).tolist(),
        round_trips=replica_round_trips(storage, first).tolist(),
        production_acceptance=float(statistics["ddpm_n_accepted"][moves].sum() / (n_targets * moves.sum()))
        if moves.any() else float("nan"),
        production_ess_fraction=float(np.nanmean(statistics["ddpm_ess_fraction"][moves])) if moves.any() else float("nan"),
        training_seconds=float(np.nansum(statistics["ddpm_training_seconds"])),
        proposal_seconds=float(np.nansum(statistics["ddpm_proposal_seconds"])),
        per_state=basin_rows(storage, config, first, directory))
    plot_proposal_statistics(statistics, os.path.join(directory, "proposal_statistics.png"),
                             window=max(1, n_iterations // 100), n_target_states=n_targets)
    with open(os.path.join(directory, "summary.json"), "w") as stream:
        json.dump(asdict(report), stream, indent=2)
    with open(os.path.join(directory, "report.md"), "w") as stream:
        stream.write(markdown(report))
    return report


def basin_rows(storage, config, first, directory):
    """Per state: P(phi > 0) and dF by its own samples and by MBAR; [] for systems without a backbone phi."""
    from openmm_ddpm.analysis import basin_free_energy_difference_kt, backbone_dihedrals, mbar_expectations
    from openmm_ddpm.analysis.timeseries import population_free_energy_kt
    from openmm_ddpm.app.plots import plot_free_energy_surfaces
    from openmm_ddpm.multistate.storage import read_reduced_potentials, read_state_trajectories

    _, _, topology = build_system(config.system)
    try:
        _, positions = read_state_trajectories(storage, first_iteration=first)
    except ValueError:  # no analysis particles stored (systems above run.ANALYSIS_ATOMS)
        return []
    if positions.size == 0 or positions.shape[2] != topology.getNumAtoms():
        return []
    n, n_states = positions.shape[:2]
    phi, psi = backbone_dihedrals(positions.reshape(n * n_states, -1, 3), topology)
    if phi.shape[1] == 0:
        return []
    phi, psi = phi[:, 0].reshape(n, n_states), psi[:, 0].reshape(n, n_states)
    plot_free_energy_surfaces(phi, psi, list(config.temperatures_kelvin), os.path.join(directory, "free_energy_surfaces.png"))
    mbar = mbar_expectations(read_reduced_potentials(storage, first_iteration=first), phi > 0, list(config.temperatures_kelvin))
    rows = []
    for k, kelvin in enumerate(config.temperatures_kelvin):
        p, p_error, df, df_error = basin_free_energy_difference_kt(phi[:, k] > 0)
        df_mbar, df_mbar_error = population_free_energy_kt(mbar.mean[k], mbar.error[k])
        inside = phi[:, k] > 0
        visits = int(inside[0]) + int(np.sum(inside[1:] & ~inside[:-1]))  # separate stays: what the error rests on
        rows.append({"temperature_kelvin": kelvin, "samples": int(n), "samples_in_phi_positive": int(np.sum(inside)),
                     "visits_to_phi_positive": visits,
                     "p": p, "p_error": p_error, "df_kT": df, "df_error_kT": df_error, "p_mbar": float(mbar.mean[k]),
                     "p_mbar_error": float(mbar.error[k]), "df_mbar_kT": df_mbar, "df_mbar_error_kT": df_mbar_error})
    return rows


def markdown(report):
    """``report.md``: the tables and the plots."""
    lines = ["# openmm-ddpm run report", "",
             f"{report.iterations} iterations; analysed from iteration {report.first_iteration} (the production phase).", "",
             f"- acceptance of the production proposals: {report.production_acceptance:.3f}; "
             f"mean ESS / (K + 1): {report.production_ess_fraction:.3f}",
             f"- time spent training {report.training_seconds:.0f} s, proposing {report.proposal_seconds:.0f} s",
             "- neighbour swap acceptance: " + ", ".join(f"{a:.2f}" for a in report.neighbour_swap_acceptance),
             f"- round trips of the replicas (lowest to highest temperature and back): {sum(report.round_trips)} "
             f"({', '.join(str(t) for t in report.round_trips)} per replica)", ""]
    if report.per_state:
        lines += ["| T (K) | P(phi > 0) | dF (kT) | P(phi > 0), MBAR | dF (kT), MBAR | samples (visits) in phi > 0 |",
                  "|---|---|---|---|---|---|"]
        for r in report.per_state:
            lines.append(f"| {r['temperature_kelvin']:.1f} | {r['p']:.4f} +- {r['p_error']:.4f} | {r['df_kT']:.2f} +- "
                         f"{r['df_error_kT']:.2f} | {r['p_mbar']:.4f} +- {r['p_mbar_error']:.4f} | {r['df_mbar_kT']:.2f} +- "
                         f"{r['df_mbar_error_kT']:.2f} | {r['samples_in_phi_positive']} ({r['visits_to_phi_positive']}) |")
        lines += ["", "The error bars rest on the separate visits to a basin: below ~20 they mean little, and the "
                  "delta-method error of dF is symmetric where the truth is not.", "",
                  "![free-energy surfaces](free_energy_surfaces.png)", ""]
    lines += ["![proposal statistics](proposal_statistics.png)", ""]
    return "\n".join(lines)
