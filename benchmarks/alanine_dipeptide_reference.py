"""Reference: plain parallel tempering of alanine dipeptide, P(phi > 0) and dF at every temperature.

Produces the reference that augmented runs are compared against (issue
"Molecules"), cached as JSON in benchmarks/results/ with the command that
made it. Literature values for this force field (ff96): vacuum P(phi>0) =
0.95 %, dF = 4.65 kT; OBC1 implicit solvent 0.31 %, 5.77 kT.

python benchmarks/alanine_dipeptide_reference.py [--solvent vacuum|implicit] [--iterations N] [--replicas N]
    [--wall-minutes M] [--from-storage run.nc]

--wall-minutes stops the run early (at a multiple of 100 iterations) and
analyses what it has; --from-storage re-analyses an existing run instead of
simulating. Implicit solvent (a CustomGBForce) runs about 60x slower per step
than vacuum on CPU, hence the wall-clock limit.
"""
import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np
import openmm
from openmm import unit
from openmmtools import cache, mcmc, multistate, states, testsystems
from provenance import command_line, write_result  # noqa: E402  (benchmarks/, the script's directory)

from openmm_ddpm import __version__
from openmm_ddpm.analysis import basin_free_energy_difference_kt

HERE = os.path.dirname(os.path.abspath(__file__))
PHI_ATOMS = [4, 6, 8, 14]  # C(ACE) N CA C


def phi_series(storage):
    """phi (rad) of the replica in every state at every iteration, (n_iterations, n_states).

    Reads the analysis particles (the four phi atoms) of each iteration.
    """
    import torch

    from openmm_ddpm.coordinates.geometry import dihedral

    reporter = multistate.MultiStateReporter(storage, open_mode="r")
    try:
        n_iterations = reporter.read_last_iteration(last_checkpoint=False)
        phi = None
        for iteration in range(1, n_iterations + 1):
            replica_of_state = np.argsort(reporter.read_replica_thermodynamic_states(iteration))
            positions = reporter.read_sampler_states(iteration, analysis_particles_only=True)
            x = np.stack([np.asarray(positions[r].positions.value_in_unit(unit.nanometer)) for r in replica_of_state])
            x = torch.as_tensor(x)
            if phi is None:
                phi = np.empty((n_iterations, len(x)))
            phi[iteration - 1] = dihedral(x[:, 0], x[:, 1], x[:, 2], x[:, 3]).numpy()
    finally:
        reporter.close()
    return phi


def simulate(molecule, temperatures, iterations, wall_minutes):
    """Run plain PT into a new storage file; returns (path, wall seconds, iterations done)."""
    move = mcmc.LangevinDynamicsMove(timestep=1.0 * unit.femtosecond, collision_rate=1.0 / unit.picosecond,
                                     n_steps=500, reassign_velocities=False)
    sampler = multistate.ParallelTemperingSampler(mcmc_moves=move, number_of_iterations=iterations,
                                                  online_analysis_interval=None)
    storage = os.path.join(tempfile.mkdtemp(prefix="ala_reference_"), "reference.nc")
    reporter = multistate.MultiStateReporter(storage, checkpoint_interval=100, analysis_particle_indices=PHI_ATOMS)
    sampler.create(states.ThermodynamicState(molecule.system, temperatures[0]), states.SamplerState(molecule.positions),
                   reporter, temperatures=temperatures, n_temperatures=len(temperatures))
    start = time.perf_counter()
    while sampler.iteration < iterations and time.perf_counter() - start < 60.0 * wall_minutes:
        sampler.run(min(100, iterations - sampler.iteration))
        print(f"iteration {sampler.iteration}/{iterations}, {time.perf_counter() - start:.0f} s", flush=True)
    wall = time.perf_counter() - start
    done = sampler.iteration
    del sampler
    reporter.close()
    return storage, wall, done


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--solvent", choices=["vacuum", "implicit"], default="vacuum")
    parser.add_argument("--iterations", type=int, default=5000)
    parser.add_argument("--replicas", type=int, default=6)
    parser.add_argument("--max-temperature", type=float, default=1000.0, help="K")
    parser.add_argument("--discard", type=int, default=200, help="iterations dropped as equilibration")
    parser.add_argument("--wall-minutes", type=float, default=float("inf"), help="stop simulating after this long")
    parser.add_argument("--from-storage", default=None, help="analyse this finished run instead of simulating")
    args = parser.parse_args(argv)
    platform_name = "Reference" if args.solvent == "vacuum" else "CPU"
    cache.global_context_cache.platform = openmm.Platform.getPlatformByName(platform_name)
    molecule = (testsystems.AlanineDipeptideVacuum if args.solvent == "vacuum" else testsystems.AlanineDipeptideImplicit)(constraints=None)
    temperatures = np.geomspace(300.0, args.max_temperature, args.replicas) * unit.kelvin
    if args.from_storage is None:
        storage, wall, done = simulate(molecule, temperatures, args.iterations, args.wall_minutes)
    else:
        storage, wall, done = args.from_storage, float("nan"), None
    phi = phi_series(storage)[args.discard:]
    done = done if done is not None else len(phi) + args.discard
    per_state = [basin_free_energy_difference_kt(phi[:, k] > 0) for k in range(phi.shape[1])]
    p, p_error, df, df_error = per_state[0]
    result = {
        "command": command_line(__file__, argv or None),
        "package_version": __version__, "openmm": openmm.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, OpenMM {platform_name} platform",
        "system": f"AlanineDipeptide{args.solvent.capitalize()}(constraints=None)",
        "temperatures_kelvin": [float(t.value_in_unit(unit.kelvin)) for t in temperatures],
        "iterations": done, "md_steps_per_iteration": 500, "timestep_fs": 1.0, "discarded_iterations": args.discard,
        "p_phi_positive_300K": p, "p_phi_positive_300K_error": p_error,
        "df_phi_positive_vs_negative_kT": df, "df_error_kT": df_error,
        "p_phi_positive_per_state": [s[0] for s in per_state],
        "p_phi_positive_error_per_state": [s[1] for s in per_state],
        "df_kT_per_state": [s[2] for s in per_state],
        "df_error_kT_per_state": [s[3] for s in per_state],
        "wall_seconds": wall,
    }
    output = os.path.join(HERE, "results", f"alanine_dipeptide_reference_{args.solvent}.json")
    os.makedirs(os.path.dirname(output), exist_ok=True)
    write_result(output, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
