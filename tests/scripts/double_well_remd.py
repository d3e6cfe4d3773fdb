"""Driver for subprocess tests: a small augmented parallel-tempering run.

python double_well_remd.py STORAGE N_ITERATIONS [--resume] [--pause-at-checkpoint I | --pause-in-iteration I] [--report FILE]

Prints one JSON line at the end (rank 0). With --pause-at-checkpoint I, the
checkpoint write of iteration I stops between the temporary file and the
rename, printing PAUSED, so a test can kill the process in the middle of it.
With --pause-in-iteration I, iteration I stops before its dynamics (the
storage synced, no file being written), printing PAUSED: a kill in the
middle of a run that cannot land inside one of openmmtools' HDF5 writes,
which can leave its storage unreadable.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import openmm
import torch
from openmm import unit
from openmmtools import cache, multistate, states

import openmm_ddpm.multistate.checkpoints as checkpoint_module
from openmm_ddpm.multistate import DDPMParallelTemperingSampler
from openmm_ddpm.testsystems import DoubleWell2D

SMALL = dict(
    model=dict(width=32, depth=1, n_steps=8),
    training=dict(train_steps=10, min_buffer_frames=40, batch_size=64),
    dynamics=dict(stream_stride=50),
    proposals=dict(min_training_steps=40, n_candidates=4),
    seed=3,
)


def _pause():
    """Tell the test, then wait for its SIGKILL."""
    print("PAUSED", flush=True)
    time.sleep(120)


def pause_in_checkpoint_write(iteration):
    original = checkpoint_module._rename_durably

    def paused(source, destination):
        if destination.endswith(f"{iteration:08d}.pt"):
            _pause()
        original(source, destination)

    checkpoint_module._rename_durably = paused


def pause_in_iteration(iteration):
    original = DDPMParallelTemperingSampler._propagate_replicas

    def paused(sampler):
        if sampler.iteration == iteration:
            _pause()
        original(sampler)

    DDPMParallelTemperingSampler._propagate_replicas = paused


class RecordingSampler(DDPMParallelTemperingSampler):
    """Records, on every rank, the positions each accepted proposal set."""

    def _propagate_replicas(self):
        super()._propagate_replicas()
        for replica_id in self.last_proposal_updates:
            positions = self._sampler_states[replica_id].positions.value_in_unit(unit.nanometer)
            self.recorded.append((self.iteration, replica_id, np.array(positions)))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("storage")
    parser.add_argument("n_iterations", type=int)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--pause-at-checkpoint", type=int)
    parser.add_argument("--pause-in-iteration", type=int)
    parser.add_argument("--report")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cache.global_context_cache.platform = openmm.Platform.getPlatformByName("Reference")
    if args.pause_at_checkpoint is not None:
        pause_in_checkpoint_write(args.pause_at_checkpoint)
    if args.pause_in_iteration is not None:
        pause_in_iteration(args.pause_in_iteration)
    sampler_class = RecordingSampler if args.report else DDPMParallelTemperingSampler
    if args.resume:
        sampler = sampler_class.from_storage(args.storage)
    else:
        system = DoubleWell2D()
        sampler = sampler_class(number_of_iterations=args.n_iterations, freeze_after=1000,
                                               online_analysis_interval=None, **SMALL)
        reporter = multistate.MultiStateReporter(args.storage, checkpoint_interval=5)
        sampler.create(states.ThermodynamicState(system.system, 300 * unit.kelvin),
                       states.SamplerState(system.minimum_positions(1)), reporter,
                       temperatures=[300.0, 600.0, 1200.0] * unit.kelvin)
    sampler.recorded = []
    start_iteration = sampler.iteration
    restored = None if sampler.learner is None else sampler.learner.restored_from_iteration
    steps_at_start = None if sampler.learner is None or sampler.learner.trainer is None else sampler.learner.trainer.n_steps_done
    sampler.run()
    if args.report:
        rank = 0 if os.environ.get("PMI_RANK") is None else int(os.environ["PMI_RANK"])
        np.savez(f"{args.report}.rank{rank}.npz",
                 iterations=np.array([r[0] for r in sampler.recorded], dtype=int),
                 replicas=np.array([r[1] for r in sampler.recorded], dtype=int),
                 positions=np.array([r[2] for r in sampler.recorded]).reshape(-1, 1, 3),
                 replica_states=sampler._replica_thermodynamic_states)
    if sampler.learner is not None:
        print(json.dumps({
            "start_iteration": int(start_iteration), "final_iteration": int(sampler.iteration),
            "restored_from_iteration": restored, "training_steps_at_start": steps_at_start,
            "training_steps": sampler.learner.trainer.n_steps_done,
            "candidates": sum(p.statistics.n_candidates for p in sampler.learner.proposals.values()),
        }), flush=True)


if __name__ == "__main__":
    sys.exit(main())
