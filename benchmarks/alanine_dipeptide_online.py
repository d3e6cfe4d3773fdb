"""Benchmark: online DDPM proposals on alanine dipeptide in vacuum (internal coordinates).

Runs DDPMParallelTemperingSampler (4 replicas, 300-1000 K, geometric) for a
fixed wall-clock budget and reports, for the production phase at 300 K: MH
acceptance (K = 1), ESS fraction, fraction of candidates outside the
domain, training-frame count, and the time split. Results go to
benchmarks/results/alanine_dipeptide_online.json with the command that made
them.

python benchmarks/alanine_dipeptide_online.py [--iterations N] [--freeze-after N] [--train-steps N]
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
import torch
from openmm import unit
from openmmtools import cache, multistate, states, testsystems

from openmm_ddpm import __version__
from openmm_ddpm.buffer import StreamingLangevinMove
from openmm_ddpm.sampler import DDPMParallelTemperingSampler, read_ddpm_statistics

HERE = os.path.dirname(os.path.abspath(__file__))


def mean_log_weight_gap(sampler, molecule, temperature, frames_before_freeze, n_frames=200, seed=0):
    """Mean log w at a temperature on training frames minus held-out frames.

    Training frames: frames of that temperature in the buffer before the
    model froze; held-out: frames streamed after the freeze (never trained
    on). log w = -u - log q (the proposal's own log-density, including the
    rotor multiplicity), relabelled into the model's space as a move does.
    """
    from openmmtools import states as openmm_states

    from openmm_ddpm.proposal import reduced_potentials

    positions, kelvins = sampler.ddpm.buffer.arrays()
    first_index = len(positions) - sampler.ddpm.buffer.n_added  # position of the first frame ever added
    index = np.arange(len(positions)) - first_index
    at_temperature = np.isclose(kelvins, temperature.value_in_unit(unit.kelvin))
    model = sampler.ddpm.proposals[0].model
    rng = np.random.default_rng(seed)
    thermodynamic_state = openmm_states.ThermodynamicState(molecule.system, temperature)
    sampler_state = openmm_states.SamplerState(molecule.positions)
    means = {}
    for name, mask in (("train", at_temperature & (index < frames_before_freeze)),
                       ("held_out", at_temperature & (index >= frames_before_freeze))):
        chosen = rng.choice(np.flatnonzero(mask), size=min(n_frames, int(mask.sum())), replace=False)
        frames = model.relabel(positions[chosen].astype(np.float64), rng)
        log_q = model.log_prob(frames, temperature)
        u = reduced_potentials(thermodynamic_state, sampler_state, frames)
        log_w = -u - log_q
        means[name] = float(np.mean(log_w[np.isfinite(log_w)]))
    return means["train"] - means["held_out"], means


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--freeze-after", type=int, default=200)
    parser.add_argument("--train-steps", type=int, default=100)
    parser.add_argument("--n-candidates", type=int, default=1)
    parser.add_argument("--stream-stride", type=int, default=10, help="MD steps between streamed frames")
    parser.add_argument("--min-buffer-frames", type=int, default=2000)
    parser.add_argument("--min-training-steps", type=int, default=2000)
    parser.add_argument("--output", default=os.path.join(HERE, "results", "alanine_dipeptide_online.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cache.global_context_cache.platform = openmm.Platform.getPlatformByName("Reference")

    molecule = testsystems.AlanineDipeptideVacuum(constraints=None)
    temperatures = np.geomspace(300.0, 1000.0, 4) * unit.kelvin
    dynamics = StreamingLangevinMove(stream_stride=args.stream_stride, timestep=1.0 * unit.femtosecond,
                                     collision_rate=1.0 / unit.picosecond, n_steps=500, reassign_velocities=False)
    sampler = DDPMParallelTemperingSampler(
        mcmc_moves=dynamics, number_of_iterations=args.iterations, online_analysis_interval=None,
        representation=dict(kind="internal"),
        model=dict(width=256, depth=3, n_steps=20, sigma_min=0.1),
        training=dict(train_steps=args.train_steps, min_buffer_frames=args.min_buffer_frames, stream_stride=args.stream_stride,
                      buffer_capacity=200_000),
        proposals=dict(target_states=[0], n_candidates=args.n_candidates,
                       min_training_steps=args.min_training_steps),
        freeze_after=args.freeze_after,
    )
    storage = os.path.join(tempfile.mkdtemp(prefix="ala_online_"), "run.nc")
    sampler.create(states.ThermodynamicState(molecule.system, temperatures[0]),
                   states.SamplerState(molecule.positions), multistate.MultiStateReporter(storage, checkpoint_interval=50),
                   temperatures=temperatures)
    start = time.perf_counter()
    sampler.run()
    wall = time.perf_counter() - start
    statistics = read_ddpm_statistics(storage)
    production = statistics["ddpm_phase"] == 1
    frames_per_iteration = sampler.ddpm.buffer.n_added / args.iterations
    gap, means = mean_log_weight_gap(sampler, molecule, temperatures[0], int(frames_per_iteration * args.freeze_after))
    proposals = np.nansum(statistics["ddpm_n_candidates"][production]) / args.n_candidates
    result = {
        "command": "python " + " ".join([os.path.relpath(__file__, os.path.dirname(HERE))] + (argv or sys.argv[1:])),
        "package_version": __version__, "torch": torch.__version__, "openmm": openmm.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads 1, OpenMM Reference platform",
        "system": "AlanineDipeptideVacuum(constraints=None), 4 replicas 300-1000 K (geometric)",
        "iterations": args.iterations, "freeze_after": args.freeze_after, "n_candidates": args.n_candidates,
        "frames_streamed": int(sampler.ddpm.buffer.n_added),
        "training_steps": 0 if sampler.ddpm.trainer is None else int(sampler.ddpm.trainer.n_steps_done),
        "production_proposals_at_300K": int(proposals),
        "acceptance": float(np.nansum(statistics["ddpm_n_accepted"][production]) / max(proposals, 1)),
        "mean_ess_fraction": float(np.nanmean(statistics["ddpm_ess_fraction"][production])),
        "invalid_candidate_fraction": float(np.nansum(statistics["ddpm_n_invalid"][production])
                                            / max(np.nansum(statistics["ddpm_n_candidates"][production]), 1)),
        "mean_log_w_gap_train_minus_held_out_300K": gap,
        "mean_log_w_300K": means,
        "wall_seconds": wall,
        "training_seconds": float(np.nansum(statistics["ddpm_training_seconds"])),
        "proposal_seconds": float(np.nansum(statistics["ddpm_proposal_seconds"])),
    }
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as stream:
        json.dump(result, stream, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
