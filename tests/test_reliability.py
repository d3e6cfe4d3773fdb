"""Reliability: a run killed anywhere (inside storage and checkpoint writes too) resumes, losing at most one interval."""
import os

import numpy as np
import pytest
import yaml
from openmmtools import multistate

from kill_harness import kill_and_resume

KILLED_RUN = {
    "system": {"builtin": "alanine_dipeptide_vacuum"},
    "temperatures": ["300 K", "400 K", "530 K"],
    "iterations": 150, "platform": "Reference", "checkpoint_interval": 4,
    "settings": {"representation": {"kind": "internal"}, "model": {"width": 16, "depth": 1, "n_steps": 4},
                 "training": {"train_steps": 2, "min_buffer_frames": 10},
                 "proposals": {"target_states": [0], "n_candidates": 2, "min_training_steps": 4, "propose_interval": 1},
                 "dynamics": {"n_steps": 40, "stream_stride": 20}, "freeze_after": 75, "seed": 3},
}


def _write(path, values):
    with open(path, "w") as stream:
        yaml.safe_dump(values, stream)
    return str(path)


def _state_zero_energies(storage, first):
    from openmm_ddpm.multistate.storage import read_reduced_potentials

    energies = read_reduced_potentials(storage, first_iteration=first)[:, 0, 0]  # 300 K's configuration at 300 K
    return first + len(energies) - 1, energies


@pytest.mark.slow
def test_twenty_kills_at_random_moments_lose_at_most_one_checkpoint_interval_each(tmp_path, capsys):
    """20 SIGKILLs aimed at MD, training, proposals, storage writes, model checkpoints and snapshots.

    After each, the next process resumes from a checkpoint iteration at most one interval before the killed
    iteration, with the model checkpoint of that same iteration (its hash matches the storage's record) and
    every replica's velocities. The finished storage is readable with every iteration's energies, and the
    300 K mean energy over production agrees with an uninterrupted run of the same config within 4.5 combined
    standard errors (statistical inefficiency included; false-failure rate below 1e-5 for Gaussian errors).
    """
    from openmm_ddpm.analysis.timeseries import mean_with_correlated_error
    from openmm_ddpm.app import cli
    from openmm_ddpm.multistate.checkpoints import newest_intact_checkpoint

    config = _write(tmp_path / "run.yaml", KILLED_RUN)
    killed, whole = str(tmp_path / "killed"), str(tmp_path / "whole")
    kills, _ = kill_and_resume(config, killed, n_kills=20, checkpoint_interval=4, seed=0)
    for kill in kills:
        assert kill.resumed_from % 4 == 0 and kill.iteration - 4 <= kill.resumed_from <= kill.iteration, kill
        assert kill.learner_from == (kill.resumed_from if kill.resumed_from > 0 else -1), kill
        assert kill.velocities_ok or kill.resumed_from == 0, kill  # iteration 0 holds the created state: no velocities
    with capsys.disabled():
        landed = {stage: sum(k.landed == stage for k in kills) for stage in sorted({k.landed for k in kills})}
        print(f"\n20 kills landed in: {landed}; restored from a snapshot: "
              f"{open(os.path.join(killed, 'run.log')).read().count('restored the snapshot')}")

    reporter = multistate.MultiStateReporter(os.path.join(killed, "run.nc"), open_mode="r")
    try:
        _, iteration = newest_intact_checkpoint(reporter)
    finally:
        reporter.close()
    assert iteration == 148  # the last checkpoint iteration, its model file matching the recorded hash
    assert cli.main(["run", config, "--out", whole, "--quiet"]) == 0
    means, errors = [], []
    for directory in (killed, whole):
        last, energies = _state_zero_energies(os.path.join(directory, "run.nc"), 76)
        assert last == 150 and np.all(np.isfinite(energies))
        mean, error, _ = mean_with_correlated_error(energies)
        means.append(mean)
        errors.append(error)
    assert abs(means[0] - means[1]) < 4.5 * np.hypot(*errors), (means, errors)


def _corrupt(path):
    """What a kill inside an HDF5 write can leave: a header and a block overwritten."""
    size = os.path.getsize(path)
    with open(path, "r+b") as stream:
        stream.seek(size // 3)
        stream.write(np.random.default_rng(0).bytes(4096))
        stream.seek(0)
        stream.write(b"\0" * 512)


def test_an_unreadable_storage_is_restored_from_its_snapshot_with_the_model_of_the_same_iteration(tmp_path):
    """Storage corrupted after iteration 14 (checkpoints every 4): the resume restores the snapshot of iteration 12
    and the model checkpoint of iteration 12, and runs to the end. Negative controls: openmmtools cannot open the
    corrupted file, and without the snapshots the recovery refuses in one line."""
    import shutil

    import netCDF4
    from openmmtools import cache

    from openmm_ddpm import DDPMParallelTemperingSampler
    from openmm_ddpm.app import cli
    from openmm_ddpm.multistate.checkpoints import run_directory_of
    from openmm_ddpm.multistate.snapshots import SLOTS, recover_storage, storage_is_readable

    cache.global_context_cache.empty()
    config = _write(tmp_path / "run.yaml", {**KILLED_RUN, "iterations": 14})
    out = str(tmp_path / "run")
    assert cli.main(["run", config, "--out", out, "--quiet"]) == 0
    storage = os.path.join(out, "run.nc")
    spare = str(tmp_path / "spare")
    shutil.copytree(out, spare)
    _corrupt(storage)
    assert not storage_is_readable(storage)
    with pytest.raises(OSError):  # what openmmtools' reporter fails on (after 8 s of retries)
        netCDF4.Dataset(storage, "r")
    sampler = DDPMParallelTemperingSampler.from_storage(storage)
    assert sampler.iteration == 12 and sampler.learner.restored_from_iteration == 12
    sampler._reporter.close()
    del sampler
    assert cli.main(["run", config, "--out", out, "--quiet", "--iterations", "20"]) == 0
    last, energies = _state_zero_energies(storage, 1)
    assert last == 20 and np.all(np.isfinite(energies))

    spare_storage = os.path.join(spare, "run.nc")
    _corrupt(spare_storage)
    for slot in SLOTS:
        shutil.rmtree(os.path.join(run_directory_of(spare_storage), slot))
    with pytest.raises(RuntimeError, match="no storage snapshot") as error:
        recover_storage(spare_storage)
    assert "\n" not in str(error.value)
    assert recover_storage(str(tmp_path / "missing.nc")) is None  # a missing storage is openmmtools' to report
