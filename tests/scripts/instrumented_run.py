"""``openmm-ddpm run`` with stage markers, for the kill-and-resume harness (tests/kill_harness.py).

Usage: python instrumented_run.py MARKERS CONFIG.yaml OUT_DIR

Appends one line per event to MARKERS, unbuffered (os.write on an O_APPEND
descriptor), so a process killed at any moment leaves the stage it was in as
its last 'enter' line:

    enter STAGE ITERATION / exit STAGE ITERATION   STAGE: md, training, proposals, storage, checkpoint, snapshot
    resumed ITERATION LEARNER_ITERATION KINETIC_OK  after from_storage: the iteration the storage resumed from,
                                                    the model checkpoint's iteration (-1: none), velocities kept
                                                    (a fresh start: resumed 0 -1 1)
    done ITERATION
"""
import functools
import os
import sys

import numpy as np
from openmm import unit
from openmmtools.multistate import MultiStateSampler

from openmm_ddpm.app import cli
from openmm_ddpm.multistate import DDPMParallelTemperingSampler, persistence, samplers

markers = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
current = {"iteration": 0}


def mark(text):
    os.write(markers, (text + "\n").encode())


def staged(stage, function, iteration_of=None):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        if iteration_of is not None:
            current["iteration"] = iteration_of(*args)
        mark(f"enter {stage} {current['iteration']}")
        result = function(*args, **kwargs)
        mark(f"exit {stage} {current['iteration']}")
        return result

    return wrapper


Mixin = samplers.DDPMSamplerMixin
Mixin._propagate_replica = staged("md", Mixin._propagate_replica, lambda self, replica_id: self._iteration)
Mixin._train_if_due = staged("training", Mixin._train_if_due)
Mixin._propose_if_due = staged("proposals", Mixin._propose_if_due)
MultiStateSampler._report_iteration = staged("storage", MultiStateSampler._report_iteration)
persistence.save_atomic = staged("checkpoint", persistence.save_atomic)
persistence.take_snapshot = staged("snapshot", persistence.take_snapshot)


def kinetic_energies_are_thermal(sampler):
    """Every replica's velocities came back: kinetic energy per degree of freedom within (0.1, 10) x kT / 2."""
    for replica, sampler_state in enumerate(sampler._sampler_states):
        state = sampler._thermodynamic_states[sampler._replica_thermodynamic_states[replica]]
        velocities = sampler_state.velocities.value_in_unit(unit.nanometer / unit.picosecond)
        masses = np.array([state.system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(len(velocities))])
        kinetic = 0.5 * np.sum(masses[:, None] * velocities ** 2) * unit.kilojoule_per_mole
        ratio = kinetic / (1.5 * len(masses) * unit.MOLAR_GAS_CONSTANT_R * state.temperature)
        if not 0.1 < ratio < 10.0:
            return False
    return True


original_from_storage = DDPMParallelTemperingSampler.from_storage.__func__


def from_storage(cls, storage):
    sampler = original_from_storage(cls, storage)
    learner = getattr(sampler.learner, "restored_from_iteration", -1) if sampler.learner is not None else -1
    mark(f"resumed {sampler.iteration} {learner} {int(kinetic_energies_are_thermal(sampler))}")
    return sampler


DDPMParallelTemperingSampler.from_storage = classmethod(from_storage)
original_create = DDPMParallelTemperingSampler.create


def create(self, *args, **kwargs):  # a fresh start (first process, or a storage set aside): resumed from 0
    original_create(self, *args, **kwargs)
    mark("resumed 0 -1 1")


DDPMParallelTemperingSampler.create = create
status = cli.main(["run", sys.argv[2], "--out", sys.argv[3], "--quiet"])
mark(f"done {status}")
sys.exit(status)
