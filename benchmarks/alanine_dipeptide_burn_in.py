"""Is a short run's low 1000 K P(phi > 0) a bias of the chain, or a run started out of equilibrium?

Runs the CI test's short alanine dipeptide ladder (vacuum, 4 replicas
300-1000 K, 160 iterations of 1.5 ps, a frame every 30 fs) with the DDPM
sampler's proposals switched off, i.e. plain parallel tempering with the
same dynamics, for several seeds (CPU platform, one thread: each seed
repeats exactly), and, if given, the same analysis of augmented runs' buffers
(``--runs``: storage files of the application). For each it reports
P(phi > 0) at 1000 K from every streamed frame, over the whole run and its
two halves, with the statistical inefficiency's error, next to the
reference run. If plain PT is as low as the augmented run and the first
half lower than the second, the deficit is the relaxation from the starting
structure (every replica starts in phi < 0), which the error bar of a
stationary series does not include, and not a defect of the proposals.

python benchmarks/alanine_dipeptide_burn_in.py [--seeds 0 1 2 3] [--runs A/run.nc ...]
"""
import argparse
import json
import os
import tempfile

import openmm
import torch
from openmm import unit
from openmmtools import cache, multistate, states
from provenance import write_result  # noqa: E402  (benchmarks/, the script's directory)

from openmm_ddpm import DDPMParallelTemperingSampler, load_run
from openmm_ddpm.analysis import mean_with_correlated_error
from openmm_ddpm.app.alanine_analysis import REFERENCE, TEMPERATURES, phi_of
from openmm_ddpm.app.alanine_dipeptide import make_molecule

HERE = os.path.dirname(os.path.abspath(__file__))


def plain_run(molecule, seed, directory):
    """Streamed (positions nm, temperatures K) of the short ladder with proposals off."""
    cache.global_context_cache.empty()
    cache.global_context_cache.set_platform(openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"})
    sampler = DDPMParallelTemperingSampler(
        number_of_iterations=160, online_analysis_interval=None, seed=seed,
        dynamics=dict(timestep=1.0 * unit.femtosecond, n_steps=1500, stream_stride=30),
        training=dict(train_interval=10**6, buffer_capacity=400_000), proposals=dict(min_training_steps=10**12))
    storage = os.path.join(directory, f"plain_{seed}.nc")
    sampler.create(states.ThermodynamicState(molecule.system, TEMPERATURES[0]), states.SamplerState(molecule.positions),
                   multistate.MultiStateReporter(storage), temperatures=TEMPERATURES)
    sampler.run()
    return sampler.learner.buffer.arrays()


def hot_population(positions, kelvins, topology):
    """P(phi > 0) at the hottest temperature over the whole series and each half: (p, error) each."""
    hot = kelvins == kelvins.max()
    in_basin = phi_of(positions[hot], topology) > 0
    half = len(in_basin) // 2
    return {name: mean_with_correlated_error(series)[:2]
            for name, series in (("whole", in_basin), ("first_half", in_basin[:half]), ("second_half", in_basin[half:]))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3])
    parser.add_argument("--runs", nargs="*", default=[], help="storage files of augmented runs (the application's run.nc)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    molecule = make_molecule("vacuum")
    with open(REFERENCE.format("vacuum")) as stream:
        reference = json.load(stream)
    rows = []
    directory = tempfile.mkdtemp(prefix="burn_in_")
    for seed in args.seeds:
        rows.append({"run": f"plain PT, seed {seed}", **hot_population(*plain_run(molecule, seed, directory), molecule.topology)})
        print(json.dumps(rows[-1]), flush=True)
    for storage in args.runs:
        rows.append({"run": f"augmented, {storage}", **hot_population(*load_run(storage).learner.buffer.arrays(),
                                                                       molecule.topology)})
        print(json.dumps(rows[-1]), flush=True)
    result = {"reference_1000K": [reference["p_phi_positive_per_state"][-1], reference["p_phi_positive_error_per_state"][-1]],
              "rows": rows}
    write_result(os.path.join(HERE, "results", "alanine_dipeptide_burn_in_1000K.json"), result, __file__, argv)


if __name__ == "__main__":
    main()
