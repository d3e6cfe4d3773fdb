"""``openmm-ddpm analyze DIR``: the report of a run directory (``report.md``, ``summary.json`` and PNG plots).

What it holds, from the storage alone (the production phase, after
``freeze_after``, or the second half of the run when there is none):

- for peptides (a topology with backbone phi): the phi/psi free-energy
  surface per temperature, and per state P(phi > 0) and dF(phi > 0 vs
  phi < 0) from that state's own samples and by MBAR over all states,
  with error bars (``openmm_ddpm.analysis``);
- the neighbour swap acceptance of the ladder and the replicas' round trips;
- acceptance, ESS / (K + 1) and training loss over the run
  (``proposal_statistics.png``), basin changes over the run
  (``basin_changes.png``) and the time split (MD with swaps and storage,
  training, proposals; from openmmtools' per-iteration timestamps);
- the free energy over one or two collective variables of the user's
  (``--cv``: distances, angles, dihedrals of atom indices) per temperature;
- where the run has a frozen model: the target temperature's replica
  samples beside the model's samples, raw and reweighted by Boltzmann
  factor over exact model density (``model_beside_replicas.png``), with the
  reweighted P(phi > 0) and its ESS.
"""
import json
import os
from dataclasses import asdict, dataclass

import numpy as np

from openmm_ddpm.app.config import ConfigError, load_config
from openmm_ddpm.app.run import CONFIG_NAME, SOURCE_NAME, STORAGE_NAME, build_system
from openmm_ddpm.app.train import solute_columns


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
    wall_seconds: float
    per_state: list
    basin_changes: list
    model_samples: dict
    collective_variables: list = None

    @property
    def other_seconds(self):
        """Wall time not spent training or proposing: MD, swaps, energies and storage (s)."""
        return max(0.0, self.wall_seconds - self.training_seconds - self.proposal_seconds)


def analyze(directory, model_samples=256, seed=0, collective_variables=()):
    """Write ``report.md``, ``summary.json`` and the plots into ``directory``; return the ``Report``.

    Parameters
    ----------
    directory : str
        The ``--out`` of ``openmm-ddpm run``.
    model_samples : int
        Model samples drawn at the target temperature to set beside the replicas (0: none).
    seed : int
        Seed of those draws.
    collective_variables : sequence of str
        One or two collective variables, each 2, 3 or 4 comma-separated atom
        indices (distance, angle, dihedral; ``--cv`` of the command line):
        their free energy per temperature goes into ``collective_variables.png``.
    """
    from openmm_ddpm.app.plots import plot_proposal_statistics
    from openmm_ddpm.multistate.storage import (neighbour_swap_acceptance, production_proposal_summary,
                                                read_ddpm_statistics, read_iteration_seconds, replica_round_trips)

    storage, trained_from = run_storage(directory)
    config = load_config(os.path.join(directory, CONFIG_NAME))
    statistics = read_ddpm_statistics(storage) if trained_from is None else {}
    n_iterations = _last_iteration(storage)
    freeze = config.settings.freeze_after
    if trained_from is not None:  # a model trained on a plain run: analyse the frames it was trained on
        first = trained_from
    else:
        first = freeze + 1 if freeze is not None and freeze < n_iterations else n_iterations // 2 + 1
    if n_iterations - first + 1 < 2:
        raise ConfigError(f"{directory} has {max(n_iterations - first + 1, 0)} iteration(s) to analyse (from "
                          f"{first} to {n_iterations}): run it longer (openmm-ddpm run --iterations N)")
    n_targets = len(config.settings.proposals.target_states)
    proposals = production_proposal_summary(statistics, n_targets) if statistics else {}
    _, _, topology = build_system(config.system)
    trajectories = state_trajectories(storage, solute_columns(directory))  # read once, for the CVs and the peptide
    cvs = collective_variable_section(trajectories, topology, config, first, directory, collective_variables)
    per_state, basin_changes, model_row = peptide_sections(storage, trajectories, topology, config, first, directory,
                                                           model_samples, seed)
    report = Report(
        iterations=n_iterations, first_iteration=first, temperatures_kelvin=list(config.temperatures_kelvin),
        neighbour_swap_acceptance=neighbour_swap_acceptance(storage, first).tolist(),
        round_trips=replica_round_trips(storage, first).tolist(),
        production_acceptance=proposals.get("acceptance", float("nan")),
        production_ess_fraction=proposals.get("mean_ess_fraction", float("nan")),
        training_seconds=proposals.get("training_seconds", 0.0), proposal_seconds=proposals.get("proposal_seconds", 0.0),
        wall_seconds=float(read_iteration_seconds(storage).sum()),
        per_state=per_state, basin_changes=basin_changes, model_samples=model_row, collective_variables=cvs)
    if statistics:
        plot_proposal_statistics(statistics, os.path.join(directory, "proposal_statistics.png"),
                                 window=max(1, n_iterations // 100), n_target_states=n_targets)
    with open(os.path.join(directory, "summary.json"), "w") as stream:
        json.dump({**asdict(report), "other_seconds": report.other_seconds}, stream, indent=2)
    with open(os.path.join(directory, "report.md"), "w") as stream:
        stream.write(markdown(report, storage if trained_from is not None else None))
    return report


def state_trajectories(storage, columns=None):
    """(iterations, positions (n, n_states, n_atoms, 3) nm) of every iteration from 1, or None when the storage keeps
    no per-iteration positions (systems above ``run.ANALYSIS_ATOMS``); ``columns``: the stored atoms to keep (a
    solute-only model's)."""
    from openmm_ddpm.multistate.storage import read_state_trajectories

    try:
        iterations, positions = read_state_trajectories(storage, first_iteration=1)
    except ValueError:  # no analysis particles stored
        return None
    return iterations, positions if columns is None else positions[:, :, columns]


def collective_variable_section(trajectories, topology, config, first, directory, texts):
    """The user's collective variables (atom-index tuples) and their plot over production; [] when none asked."""
    from openmm_ddpm.analysis.collective import collective_variable_values, parse_collective_variable
    from openmm_ddpm.app.plots import plot_collective_variables

    if not texts:
        return []
    if len(texts) > 2:
        raise ConfigError(f"--cv given {len(texts)} times: one collective variable draws profiles, two a surface")
    try:
        cvs = [parse_collective_variable(text, topology.getNumAtoms()) for text in texts]
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if trajectories is None:
        raise ConfigError("--cv needs every iteration's positions, which runs store for systems up to "
                          "1,000 atoms only")
    iterations, positions = trajectories
    positions = positions[iterations >= first]
    n, n_states = positions.shape[:2]
    values = np.stack([collective_variable_values(positions.reshape(n * n_states, -1, 3), topology, atoms)
                       .reshape(n, n_states) for atoms in cvs], axis=-1)
    plot_collective_variables(values, cvs, list(config.temperatures_kelvin),
                              os.path.join(directory, "collective_variables.png"))
    return [list(atoms) for atoms in cvs]


def run_storage(directory):
    """The storage a directory's report reads, and for a ``train`` directory the first iteration it trained on.

    Returns
    -------
    storage : str
    trained_from : int or None
        None for a run directory (``openmm-ddpm run``).
    """
    if not os.path.exists(os.path.join(directory, CONFIG_NAME)):
        raise ConfigError(f"{directory} holds no {CONFIG_NAME}: give the --out of openmm-ddpm run or train")
    storage = os.path.join(directory, STORAGE_NAME)
    if os.path.exists(storage):
        return storage, None
    source = os.path.join(directory, SOURCE_NAME)
    if not os.path.exists(source):
        raise ConfigError(f"{directory} holds no {STORAGE_NAME} (a run) or {SOURCE_NAME} (a trained model): "
                          "give the --out of openmm-ddpm run or train")
    with open(source) as stream:
        values = json.load(stream)
    if not os.path.exists(values["storage"]):
        raise ConfigError(f"{values['storage']}, the storage this model was trained on, is gone: "
                          f"put it back or correct {source}")
    return values["storage"], int(values["first_iteration"])


def _last_iteration(storage):
    from openmmtools import multistate

    reporter = multistate.MultiStateReporter(storage, open_mode="r")
    try:
        return int(reporter.read_last_iteration(last_checkpoint=False))
    finally:
        reporter.close()


def peptide_sections(storage, trajectories, topology, config, first, directory, model_samples, seed):
    """Per-state basin rows, basin changes per state in production, and the model row; empty without a backbone phi."""
    from openmm_ddpm.analysis import backbone_dihedrals
    from openmm_ddpm.app.plots import plot_basin_changes, plot_free_energy_surfaces

    if trajectories is None:
        return [], [], {}
    iterations, positions = trajectories
    if positions.size == 0 or positions.shape[2] != topology.getNumAtoms():
        return [], [], {}
    n, n_states = positions.shape[:2]
    phi, psi = backbone_dihedrals(positions.reshape(n * n_states, -1, 3), topology)
    if phi.shape[1] == 0:
        return [], [], {}
    phi, psi = phi[:, 0].reshape(n, n_states), psi[:, 0].reshape(n, n_states)
    temperatures = list(config.temperatures_kelvin)
    plot_basin_changes(iterations, phi, temperatures, os.path.join(directory, "basin_changes.png"), production_start=first)
    production = iterations >= first
    changes = np.sum(np.diff(phi[production] > 0, axis=0), axis=0).astype(int).tolist()
    phi, psi = phi[production], psi[production]
    plot_free_energy_surfaces(phi, psi, temperatures, os.path.join(directory, "free_energy_surfaces.png"))
    rows = basin_rows(storage, phi, temperatures, first)
    target = (config.settings.proposals.target_states or [0])[0]
    model_row = model_beside_replicas(directory, topology, (phi[:, target], psi[:, target]), temperatures[target],
                                      model_samples, seed)
    return rows, changes, model_row


def basin_rows(storage, phi, temperatures_kelvin, first):
    """Per state: P(phi > 0) and dF by its own samples and by MBAR."""
    from openmm_ddpm.analysis import basin_free_energy_difference_kt
    from openmm_ddpm.analysis.mbar import mbar_or_nan
    from openmm_ddpm.analysis.timeseries import population_free_energy_kt
    from openmm_ddpm.multistate.storage import read_reduced_potentials

    mbar = mbar_or_nan(read_reduced_potentials(storage, first_iteration=first), phi > 0, temperatures_kelvin)
    rows = []
    for k, kelvin in enumerate(temperatures_kelvin):
        p, p_error, df, df_error = basin_free_energy_difference_kt(phi[:, k] > 0)
        df_mbar, df_mbar_error = population_free_energy_kt(mbar.mean[k], mbar.error[k])
        inside = phi[:, k] > 0
        visits = int(inside[0]) + int(np.sum(inside[1:] & ~inside[:-1]))  # separate stays: what the error rests on
        rows.append({"temperature_kelvin": kelvin, "samples": int(len(phi)), "samples_in_phi_positive": int(np.sum(inside)),
                     "visits_to_phi_positive": visits,
                     "p": p, "p_error": p_error, "df_kT": df, "df_error_kT": df_error, "p_mbar": float(mbar.mean[k]),
                     "p_mbar_error": float(mbar.error[k]), "df_mbar_kT": df_mbar, "df_mbar_error_kT": df_mbar_error})
    return rows


def model_beside_replicas(directory, topology, replica_dihedrals, kelvin, n_samples, seed):
    """Model samples at ``kelvin`` reweighted to Boltzmann: P(phi > 0) with its ESS, and the three-panel plot."""
    from openmm import unit

    from openmm_ddpm.analysis import backbone_dihedrals, basin_ess, reweighted_expectation
    from openmm_ddpm.app.plots import plot_model_beside_replicas
    from openmm_ddpm.app.run import MODEL_NAME
    from openmm_ddpm.app.sample import draw_weighted

    if n_samples < 1 or not os.path.exists(os.path.join(directory, MODEL_NAME)):
        return {}
    samples = draw_weighted(directory, kelvin * unit.kelvin, n_samples, seed=seed)
    kept = np.all(np.isfinite(samples.positions), axis=(1, 2))
    phi, psi = backbone_dihedrals(samples.positions[kept], topology)
    weights, inside = samples.weights[kept], phi[:, 0] > 0
    p = float(np.sum(weights[inside]))
    if samples.reweighted:  # delta-method error; the ESS inside the basin says whether to believe it
        p_error = reweighted_expectation(samples.log_weights[kept], inside).error
        ess_inside = basin_ess(samples.log_weights[kept], inside).get(True, (0.0,))[0]
    else:  # binomial: equal weights
        p_error = float(np.sqrt(p * (1.0 - p) / max(samples.ess, 1.0)))
        ess_inside = float(np.sum(inside))
    plot_model_beside_replicas(replica_dihedrals, (phi[:, 0], psi[:, 0]), weights, kelvin,
                               os.path.join(directory, "model_beside_replicas.png"))
    return {"temperature_kelvin": kelvin, "samples": int(n_samples), "outside_domain": int(np.sum(~kept)),
            "ess": float(samples.ess), "p": p, "p_error": p_error, "reweighted": samples.reweighted,
            "draws_in_phi_positive": int(np.sum(inside)), "ess_in_phi_positive": float(ess_inside),
            "unweighted_p": float(np.mean(inside)) if kept.any() else float("nan")}


def markdown(report, trained_on=None):
    """``report.md``: the tables and the plots (``trained_on``: the plain run's storage of a ``train`` directory)."""
    if trained_on is None:
        lines = ["# openmm-ddpm run report", "",
                 f"{report.iterations} iterations; analysed from iteration {report.first_iteration} (the production "
                 "phase).", "",
                 f"- acceptance of the production proposals: {report.production_acceptance:.3f}; "
                 f"mean ESS / (K + 1): {report.production_ess_fraction:.3f}",
                 f"- wall time {report.wall_seconds:.0f} s: MD, swaps and storage {report.other_seconds:.0f} s, training "
                 f"{report.training_seconds:.0f} s, proposing {report.proposal_seconds:.0f} s"]
    else:
        lines = ["# openmm-ddpm report of a trained model", "",
                 f"The model was trained on {trained_on}: {report.iterations} iterations of plain replica exchange, "
                 f"analysed (and trained on) from iteration {report.first_iteration}.", "",
                 f"- wall time of that run {report.wall_seconds:.0f} s"]
    lines += ["- neighbour swap acceptance: " + ", ".join(f"{a:.2f}" for a in report.neighbour_swap_acceptance),
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
                  "![free-energy surfaces](free_energy_surfaces.png)", "",
                  "Basin changes (sign flips of phi) of each state's configuration in production: "
                  + ", ".join(f"{r['temperature_kelvin']:.0f} K {c}" for r, c in zip(report.per_state, report.basin_changes)),
                  "", "![basin changes](basin_changes.png)", ""]
    if report.model_samples:
        m = report.model_samples
        if m["reweighted"]:
            lines.append(f"The frozen model at {m['temperature_kelvin']:.0f} K: {m['samples']} samples ({m['outside_domain']} "
                         f"outside its domain), P(phi > 0) {m['unweighted_p']:.4f} as drawn, {m['p']:.4f} +- "
                         f"{m['p_error']:.4f} reweighted by Boltzmann factor over exact model density (ESS {m['ess']:.0f}; "
                         f"in phi > 0 it rests on an ESS of {m['ess_in_phi_positive']:.1f} from {m['draws_in_phi_positive']} "
                         "draws there). Below an ESS of ~20 inside the basin its population is not to be trusted, "
                         "whatever the overall ESS: a model that misses the basin's shape gives it a few large weights, "
                         "and no error bar sees mass the model never drew. The run's estimates above do not use these "
                         "samples.")
        else:
            lines.append(f"The solute-only model at {m['temperature_kelvin']:.0f} K: {m['samples']} samples "
                         f"({m['outside_domain']} outside its domain), P(phi > 0) {m['p']:.4f} +- {m['p_error']:.4f} as "
                         "drawn. APPROXIMATE: the water is not in the model, so these samples cannot be reweighted; "
                         "they carry the model's error (compare them with the replicas above).")
        lines += ["", "![model beside replicas](model_beside_replicas.png)", ""]
    if report.collective_variables:
        from openmm_ddpm.analysis.collective import KINDS

        names = ", ".join(f"{KINDS[len(a)]} of atoms {'-'.join(map(str, a))}" for a in report.collective_variables)
        lines += [f"Free energy per temperature over {names} (0-based atom indices), production samples:", "",
                  "![collective variables](collective_variables.png)", ""]
    if trained_on is None:
        lines += ["![proposal statistics](proposal_statistics.png)", ""]
    return "\n".join(lines)
