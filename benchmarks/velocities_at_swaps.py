"""Plain parallel tempering of alanine dipeptide with velocities kept, rescaled or reassigned at a swap.

openmmtools' ParallelTemperingSampler, 6 replicas 300-1000 K (geometric),
500 steps of 1 fs per iteration (LangevinMiddle, 1/ps), vacuum,
constraints=None, Reference platform. ``keep``: velocities carried over
from the replica's previous temperature (``reassign_velocities=False``, what
compare_remd ran before session 17); ``rescale``: scaled by
sqrt(T_new / T_old) at the swap (``RescalingParallelTemperingSampler``);
``reassign``: drawn afresh every iteration. Reported: <u> of the 300 K
state (first 20 % dropped, batch-means error over 10 batches) and the
kinetic energy of the 300 K replica at the end of its MD, in kT
(equipartition over 63 degrees of freedom: 31.5).

python benchmarks/velocities_at_swaps.py --mode keep|rescale|reassign [--iterations 3000] [--seed 5]
"""
import argparse
import os
import tempfile

import numpy as np
import openmm
from openmm import unit
from openmmtools import cache, mcmc, multistate, states, testsystems
from provenance import write_result  # noqa: E402  (benchmarks/, the script's directory)

from openmm_ddpm.analysis import batch_means_standard_error
from remd_traces import RescalingParallelTemperingSampler

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("keep", "rescale", "reassign"), required=True)
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)
    np.random.seed(args.seed)
    cache.global_context_cache.set_platform(openmm.Platform.getPlatformByName("Reference"))
    molecule = testsystems.AlanineDipeptideVacuum(constraints=None)
    move = mcmc.LangevinDynamicsMove(timestep=1.0 * unit.femtosecond, collision_rate=1.0 / unit.picosecond, n_steps=500,
                                     reassign_velocities=args.mode == "reassign")
    kind = RescalingParallelTemperingSampler if args.mode == "rescale" else multistate.ParallelTemperingSampler
    sampler = kind(mcmc_moves=move, number_of_iterations=args.iterations, online_analysis_interval=None)
    storage = os.path.join(tempfile.mkdtemp(), "run.nc")
    sampler.create(states.ThermodynamicState(molecule.system, 300 * unit.kelvin), [states.SamplerState(molecule.positions)] * 6,
                   multistate.MultiStateReporter(storage, checkpoint_interval=1000),
                   temperatures=list(np.geomspace(300.0, 1000.0, 6)) * unit.kelvin, n_temperatures=6)
    masses = np.array([molecule.system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(22)])
    kt = (unit.MOLAR_GAS_CONSTANT_R * 300 * unit.kelvin).value_in_unit(unit.kilojoule_per_mole)
    reduced, kinetic = [], []
    for _ in range(args.iterations):
        sampler.run(1)
        replica = int(np.flatnonzero(sampler._replica_thermodynamic_states == 0)[0])
        reduced.append(sampler._energy_thermodynamic_states[replica, 0])
        v = sampler._sampler_states[replica].velocities.value_in_unit(unit.nanometer / unit.picosecond)
        kinetic.append(0.5 * np.sum(masses[:, None] * v**2) / kt)
    first = args.iterations // 5
    u, k = np.array(reduced[first:]), np.array(kinetic[first:])
    result = {"mode": args.mode, "seed": args.seed, "iterations": args.iterations,
              "mean_reduced_potential_300K": float(u.mean()), "error": float(batch_means_standard_error(u, n_batches=10)),
              "mean_kinetic_energy_300K_kT": float(k.mean()), "kinetic_error": float(batch_means_standard_error(k, n_batches=10)),
              "equipartition_kT": 31.5}
    print(result)
    write_result(os.path.join(HERE, "results", f"velocities_at_swaps_{args.mode}_seed{args.seed}.json"), result, __file__, argv)


if __name__ == "__main__":
    main()
