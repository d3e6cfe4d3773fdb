"""The founding paper's workflow in explicit water, measured at a held-out temperature.

Alanine dipeptide (amber14, ACE-ALA-NME) in TIP3P water (2.3 nm cubic box,
PME with a 0.9 nm cutoff, constraints=HBonds, rigid water, 2 fs), plain
openmmtools parallel tempering over 8 temperatures 300-400 K (geometric),
500 fs of Langevin dynamics per iteration, velocities redrawn every
iteration, OpenMM's CPU platform on one thread; only the solute's 22 atoms
are stored per iteration (``analysis_particle_indices``). Then
``openmm-ddpm train`` (``train_from_storage``) fits a solute-only model to
the solute coordinates of every state but one, held out, and the model's
samples at each temperature are compared with the replicas there.

The model's samples are NOT reweighted: without the water the Boltzmann
factor of a solute configuration is unknown, so they carry the model's
error. What is measured is that error: the populations of the
alpha_R, beta/PPII and alpha_L basins (phi/psi) of the model's samples
against those of the replica at the same temperature (its own samples,
batch-means error bars; MBAR over every replica beside it, where MBAR
converges: in water neighbouring states' energies barely overlap), at the held-out temperature (interpolation), at the training
temperatures (the fit), and, as the baseline a model must beat, the
average of the two neighbouring replicas at the held-out temperature.
Samples at never-simulated temperatures outside the ladder (280 K,
420 K) are reported without a reference.

python benchmarks/explicit_solvent_workflow.py simulate --minutes 90   # the plain run (one core)
python benchmarks/explicit_solvent_workflow.py analyze [--steps 20000]    # train, sample, compare
"""
import argparse
import os
import sys
import time

import numpy as np
import openmm
from openmm import app, unit

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.path.join(HERE, os.pardir, "compare_traces", "explicit_solvent")
STORAGE = os.path.join(WORK, "remd.nc")
STRUCTURE = os.path.join(WORK, "solvated.pdb")
TEMPERATURES_KELVIN = tuple(float(t) for t in np.geomspace(300.0, 400.0, 8))
HELD_OUT_STATE = 4  # 353.5 K
MD_STEPS = 250  # x 2 fs
OUTSIDE_LADDER_KELVIN = (280.0, 420.0)


def solvated_alanine_dipeptide():
    """(System, Topology, positions) of alanine dipeptide in a 2.3 nm TIP3P box, minimized."""
    from openmmtools import testsystems

    peptide = testsystems.AlanineDipeptideVacuum()
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    modeller = app.Modeller(peptide.topology, peptide.positions)
    modeller.addSolvent(forcefield, model="tip3p", boxSize=openmm.Vec3(2.3, 2.3, 2.3) * unit.nanometer)
    system = forcefield.createSystem(modeller.topology, nonbondedMethod=app.PME, nonbondedCutoff=0.9 * unit.nanometer,
                                     constraints=app.HBonds, rigidWater=True)
    integrator = openmm.VerletIntegrator(1.0 * unit.femtosecond)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"})
    context.setPositions(modeller.positions)
    openmm.LocalEnergyMinimizer.minimize(context, maxIterations=500)
    positions = context.getState(getPositions=True).getPositions(asNumpy=True)
    return system, modeller.topology, positions


def simulate(minutes, seed):
    """Plain parallel tempering until ``minutes`` of wall time have passed (extends the storage if it exists)."""
    from openmmtools import cache, mcmc, multistate, states

    platform = openmm.Platform.getPlatformByName("CPU")
    cache.global_context_cache.platform = platform
    cache.global_context_cache.platform_properties = {"Threads": "1"}
    if os.path.exists(STORAGE):
        sampler = multistate.ParallelTemperingSampler.from_storage(STORAGE)
    else:
        os.makedirs(WORK, exist_ok=True)
        system, topology, positions = solvated_alanine_dipeptide()
        with open(STRUCTURE, "w") as stream:
            app.PDBFile.writeFile(topology, positions, stream)
        solute = [atom.index for atom in topology.atoms() if atom.residue.name != "HOH"]
        move = mcmc.LangevinDynamicsMove(timestep=2.0 * unit.femtosecond, collision_rate=1.0 / unit.picosecond,
                                         n_steps=MD_STEPS, reassign_velocities=True)
        sampler = multistate.ParallelTemperingSampler(mcmc_moves=move, number_of_iterations=np.inf)
        reporter = multistate.MultiStateReporter(STORAGE, checkpoint_interval=20, analysis_particle_indices=solute)
        kelvins = [t * unit.kelvin for t in TEMPERATURES_KELVIN]
        sampler.create(states.ThermodynamicState(system, kelvins[0]), states.SamplerState(positions, box_vectors=
                       system.getDefaultPeriodicBoxVectors()), reporter, temperatures=kelvins,
                       n_temperatures=len(kelvins))  # openmmtools reads n_temperatures even with temperatures
    np.random.seed(seed)
    deadline = time.time() + 60.0 * minutes
    while time.time() < deadline:
        sampler.extend(n_iterations=10)
        print(f"iteration {sampler.iteration}, {(deadline - time.time()) / 60:.1f} min left", flush=True)
    print(f"{STORAGE}: {sampler.iteration} iterations")


BASINS = ("alpha_R", "beta/PPII", "alpha_L")


def basin_indicators(positions_nm, topology):
    """(n, 3) one-hot basin of each solute configuration: alpha_R (phi < 0, -120 < psi < 50 deg), beta/PPII (phi < 0,
    the rest), alpha_L (phi > 0)."""
    from openmm_ddpm.analysis import backbone_dihedrals

    phi, psi = backbone_dihedrals(positions_nm, topology)
    phi, psi = np.degrees(phi[:, 0]), np.degrees(psi[:, 0])
    alpha_r = (phi < 0) & (psi > -120) & (psi < 50)
    return np.column_stack([alpha_r, (phi < 0) & ~alpha_r, phi >= 0]).astype(float)


def replica_populations(indicators):
    """Basin populations of one state's time series (n, 3) with batch-means errors (20 batches, fewer for short runs)."""
    from openmm_ddpm.analysis.timeseries import batch_means_standard_error

    n_batches = min(20, len(indicators) // 2)
    return indicators.mean(axis=0), np.array([batch_means_standard_error(column, n_batches) for column in indicators.T])


def mbar_populations(indicators, first_iteration, temperatures_kelvin):
    """MBAR over every state's samples: each basin's population at every state and its error, (n_states, 3) each
    (NaN where MBAR does not converge: states whose energies in water hardly overlap)."""
    from openmm_ddpm.analysis.mbar import mbar_or_nan
    from openmm_ddpm.multistate.storage import read_reduced_potentials

    u = read_reduced_potentials(STORAGE, first_iteration=first_iteration)[:len(indicators)]
    estimates = [mbar_or_nan(u, indicators[:, :, b], temperatures_kelvin) for b in range(indicators.shape[2])]
    return (np.array([e.mean[:len(temperatures_kelvin)] for e in estimates]).T,
            np.array([e.error[:len(temperatures_kelvin)] for e in estimates]).T)


def model_populations(model, kelvin, n_samples, reference, topology, seed):
    """Basin populations of ``n_samples`` drawn from the solute model at ``kelvin`` (binomial errors), draws outside the
    model's domain left out; and the seconds it took."""
    from openmm_ddpm.app.sample import draw_unweighted

    start = time.perf_counter()
    samples = draw_unweighted(model, kelvin * unit.kelvin, n_samples, reference, seed=seed, batch_size=256)
    seconds = time.perf_counter() - start
    kept = np.all(np.isfinite(samples.positions), axis=(1, 2))
    p = basin_indicators(samples.positions[kept], topology).mean(axis=0)
    return p, np.sqrt(p * (1 - p) / max(kept.sum(), 1)), int((~kept).sum()), seconds


def analyze(steps, first_iteration, n_samples, seed, argv=None):
    """Train with the held-out state left out, compare the model's basin populations with the replicas'; JSON + PNG."""
    import torch
    from provenance import write_result  # noqa: E402  (benchmarks/, the script's directory)

    from openmm_ddpm.app.config import default_config
    from openmm_ddpm.app.train import read_temperature_ladder, train_from_storage
    from openmm_ddpm.multistate import load_exported_model
    from openmm_ddpm.multistate.storage import neighbour_swap_acceptance, read_iteration_seconds

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    out = os.path.join(WORK, f"model_heldout{HELD_OUT_STATE}_{steps}steps_seed{seed}")
    settings = default_config().settings
    timing = os.path.join(out, "training_seconds.txt")
    if not os.path.exists(os.path.join(out, "model.pt")):  # train once; a rerun analyses the same model
        start = time.perf_counter()
        train_from_storage(STORAGE, STRUCTURE, out, steps, settings, first_iteration, held_out_states=[HELD_OUT_STATE])
        with open(timing, "w") as stream:
            stream.write(f"{time.perf_counter() - start}\n")
    training_seconds = float(open(timing).read()) if os.path.exists(timing) else float("nan")
    solute_topology = app.PDBFile(os.path.join(out, "structure.pdb")).topology
    system = openmm.XmlSerializer.deserialize(open(os.path.join(out, "system.xml")).read())
    model = load_exported_model(os.path.join(out, "model.pt"), system)
    reference = app.PDBFile(os.path.join(out, "structure.pdb")).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    ladder = read_temperature_ladder(STORAGE)
    indicators = np.stack([basin_indicators(states, solute_topology)
                           for states in ladder.positions[first_iteration - 1:].transpose(1, 0, 2, 3)], axis=1)
    by_mbar = mbar_populations(indicators, first_iteration, ladder.temperatures_kelvin)
    rows = []
    for k, kelvin in enumerate(ladder.temperatures_kelvin):
        replica, replica_error = replica_populations(indicators[:, k])
        drawn, drawn_error, outside, seconds = model_populations(model, kelvin, n_samples, reference, solute_topology,
                                                                 seed + k)
        rows.append({"temperature_kelvin": kelvin, "held_out": k == HELD_OUT_STATE, "replica": replica.tolist(),
                     "replica_error": replica_error.tolist(), "mbar": by_mbar[0][k].tolist(),
                     "mbar_error": by_mbar[1][k].tolist(), "model": drawn.tolist(), "model_error": drawn_error.tolist(),
                     "model_outside_domain": outside, "sampling_seconds": seconds,
                     "deviation_sigma": (np.abs(drawn - replica) / np.hypot(drawn_error, replica_error)).tolist()})
    neighbours = [r for k, r in enumerate(rows) if abs(k - HELD_OUT_STATE) == 1]
    interpolated = np.mean([r["replica"] for r in neighbours], axis=0)
    outside_ladder = []
    for j, kelvin in enumerate(OUTSIDE_LADDER_KELVIN):
        drawn, drawn_error, outside, seconds = model_populations(model, kelvin, n_samples, reference, solute_topology,
                                                                 seed + 100 + j)
        outside_ladder.append({"temperature_kelvin": kelvin, "model": drawn.tolist(), "model_error": drawn_error.tolist(),
                               "model_outside_domain": outside, "no_reference": True})
    held = rows[HELD_OUT_STATE]
    result = {
        "what": "explicit-water alanine dipeptide: a solute-only model trained on plain PT frames, its basin "
                "populations at a held-out temperature against the replica there (NOT reweighted: approximate)",
        "basin_names": list(BASINS), "iterations": int(ladder.positions.shape[0]), "first_iteration": first_iteration,
        "md_per_iteration_ps": MD_STEPS * 0.002, "atoms": ladder.system.getNumParticles(),
        "simulation": {"command": "python benchmarks/explicit_solvent_workflow.py simulate --minutes 90",
                       "platform": "CPU, 1 thread", "wall_seconds": float(read_iteration_seconds(STORAGE).sum())},
        "training_steps": steps, "training_seconds": training_seconds,
        "model_samples_per_temperature": n_samples,
        "neighbour_swap_acceptance": neighbour_swap_acceptance(STORAGE, first_iteration).tolist(),
        "held_out_state": HELD_OUT_STATE, "held_out_kelvin": held["temperature_kelvin"],
        "held_out_error": (np.asarray(held["model"]) - held["replica"]).tolist(),
        "held_out_error_vs_mbar": (np.asarray(held["model"]) - held["mbar"]).tolist(),
        "neighbour_average_error": (interpolated - held["replica"]).tolist(),
        "training_states_mean_abs_error": float(np.mean([np.abs(np.subtract(r["model"], r["replica"])).mean()
                                                         for r in rows if not r["held_out"]])),
        "per_state": rows, "outside_ladder": outside_ladder,
    }
    name = f"explicit_solvent_workflow_heldout{HELD_OUT_STATE}"
    write_result(os.path.join(HERE, "results", name + ".json"), result, __file__, argv)
    plot(result, os.path.join(HERE, "results", name + ".png"))
    return result


def plot(result, path):
    """Basin populations against temperature: replicas (error bars), the model (line), the held-out state marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["per_state"]
    kelvins = [r["temperature_kelvin"] for r in rows]
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.6), constrained_layout=True)
    for b, (axis, basin) in enumerate(zip(axes, result["basin_names"])):
        axis.errorbar(kelvins, [r["replica"][b] for r in rows], yerr=[2 * r["replica_error"][b] for r in rows], fmt="o",
                      color="black", label="replica (2 sigma)")
        model_kelvins = kelvins + [r["temperature_kelvin"] for r in result["outside_ladder"]]
        model = [r["model"][b] for r in rows] + [r["model"][b] for r in result["outside_ladder"]]
        order = np.argsort(model_kelvins)
        axis.plot(np.array(model_kelvins)[order], np.array(model)[order], "-s", color="tab:blue", ms=4,
                  label="solute model, as drawn")
        held = rows[result["held_out_state"]]
        axis.plot([held["temperature_kelvin"]], [held["model"][b]], "*", color="tab:red", ms=14,
                  label=f"model at held-out {held['temperature_kelvin']:.0f} K")
        axis.set_title(basin)
        axis.set_xlabel("T (K)")
    axes[0].set_ylabel("population")
    axes[0].legend(fontsize=7)
    figure.suptitle("Alanine dipeptide in TIP3P: solute model (not reweighted) against plain PT replicas")
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("simulate")
    run.add_argument("--minutes", type=float, default=90.0)
    run.add_argument("--seed", type=int, default=0)
    study = commands.add_parser("analyze")
    study.add_argument("--steps", type=int, default=20_000, help="training steps")
    study.add_argument("--first-iteration", type=int, default=51, help="the first 25 ps are equilibration")
    study.add_argument("--samples", type=int, default=4000, help="model samples per temperature")
    study.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "simulate":
        simulate(args.minutes, args.seed)
    else:
        result = analyze(args.steps, args.first_iteration, args.samples, args.seed, argv)
        print(f"held out {result['held_out_kelvin']:.1f} K: model - replica {np.round(result['held_out_error'], 3)}, "
              f"neighbour average - replica {np.round(result['neighbour_average_error'], 3)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
