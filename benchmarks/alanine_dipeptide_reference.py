"""Reference: plain parallel tempering of alanine dipeptide, P(phi > 0) and dF at 300 K.

Produces the reference that augmented runs are compared against (issue
"Molecules"), cached as JSON in benchmarks/results/ with the command that
made it. Literature values for this force field (ff96): vacuum P(phi>0) =
0.95 %, dF = 4.65 kT; OBC1 implicit solvent 0.31 %, 5.77 kT.

python benchmarks/alanine_dipeptide_reference.py [--solvent vacuum|implicit] [--iterations N] [--replicas N]
"""
import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np
import openmm
from openmm import unit
from openmmtools import cache, mcmc, multistate, states, testsystems

from openmm_ddpm import __version__
from openmm_ddpm.analysis import basin_free_energy_difference_kt

HERE = os.path.dirname(os.path.abspath(__file__))
PHI_ATOMS = [4, 6, 8, 14]  # C(ACE) N CA C


def phi_series(storage, state_index=0):
    """phi (rad) of the replica in a state at every iteration, from the analysis particles."""
    import torch

    from openmm_ddpm.internal import _dihedral

    reporter = multistate.MultiStateReporter(storage, open_mode="r")
    try:
        n_iterations = reporter.read_last_iteration(last_checkpoint=False)
        phi = np.empty(n_iterations)
        for iteration in range(1, n_iterations + 1):
            replica = int(np.flatnonzero(reporter.read_replica_thermodynamic_states(iteration) == state_index)[0])
            x = reporter.read_sampler_states(iteration, analysis_particles_only=True)[replica].positions
            x = torch.as_tensor(np.asarray(x.value_in_unit(unit.nanometer)))[None]
            phi[iteration - 1] = _dihedral(x[:, 0], x[:, 1], x[:, 2], x[:, 3]).item()
    finally:
        reporter.close()
    return phi


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--solvent", choices=["vacuum", "implicit"], default="vacuum")
    parser.add_argument("--iterations", type=int, default=5000)
    parser.add_argument("--replicas", type=int, default=6)
    parser.add_argument("--max-temperature", type=float, default=1000.0, help="K")
    parser.add_argument("--discard", type=int, default=200, help="iterations dropped as equilibration")
    args = parser.parse_args(argv)
    platform_name = "Reference" if args.solvent == "vacuum" else "CPU"
    cache.global_context_cache.platform = openmm.Platform.getPlatformByName(platform_name)
    molecule = (testsystems.AlanineDipeptideVacuum if args.solvent == "vacuum" else testsystems.AlanineDipeptideImplicit)(constraints=None)
    temperatures = np.geomspace(300.0, args.max_temperature, args.replicas) * unit.kelvin
    move = mcmc.LangevinDynamicsMove(timestep=1.0 * unit.femtosecond, collision_rate=1.0 / unit.picosecond,
                                     n_steps=500, reassign_velocities=False)
    sampler = multistate.ParallelTemperingSampler(mcmc_moves=move, number_of_iterations=args.iterations,
                                                  online_analysis_interval=None)
    storage = os.path.join(tempfile.mkdtemp(prefix="ala_reference_"), "reference.nc")
    reporter = multistate.MultiStateReporter(storage, checkpoint_interval=500, analysis_particle_indices=PHI_ATOMS)
    sampler.create(states.ThermodynamicState(molecule.system, temperatures[0]), states.SamplerState(molecule.positions),
                   reporter, temperatures=temperatures, n_temperatures=len(temperatures))
    start = time.perf_counter()
    sampler.run()
    wall = time.perf_counter() - start
    del sampler
    reporter.close()
    phi = phi_series(storage)[args.discard:]
    p, p_error, df, df_error = basin_free_energy_difference_kt(phi > 0)
    result = {
        "command": "python " + " ".join([os.path.relpath(__file__, os.path.dirname(HERE))] + (argv or sys.argv[1:])),
        "package_version": __version__, "openmm": openmm.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, OpenMM {platform_name} platform",
        "system": f"AlanineDipeptide{args.solvent.capitalize()}(constraints=None)",
        "temperatures_kelvin": [float(t.value_in_unit(unit.kelvin)) for t in temperatures],
        "iterations": args.iterations, "md_steps_per_iteration": 500, "timestep_fs": 1.0, "discarded_iterations": args.discard,
        "p_phi_positive_300K": p, "p_phi_positive_300K_error": p_error,
        "df_phi_positive_vs_negative_kT": df, "df_error_kT": df_error,
        "wall_seconds": wall,
    }
    output = os.path.join(HERE, "results", f"alanine_dipeptide_reference_{args.solvent}.json")
    os.makedirs(os.path.dirname(output), exist_ok=True)
    with open(output, "w") as stream:
        json.dump(result, stream, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
