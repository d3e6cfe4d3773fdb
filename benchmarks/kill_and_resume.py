"""Issue 20: a run killed N times at random moments resumes each time; and what a storage snapshot costs.

Part 1 (``--kills N``): the kill-and-resume harness of the test suite
(``tests/kill_harness.py``) on a longer alanine dipeptide run (vacuum, 4
replicas 300-600 K, 600 iterations of 100 x 1 fs, checkpoints every 10,
the model frozen at 300): N SIGKILLs aimed in turn at MD, training,
proposals, storage writes, model checkpoint writes and storage snapshots.
Records where each landed, what the next process resumed (storage and model
checkpoint iteration, velocities), the snapshots restored, and the 300 K
mean potential energy over production against an uninterrupted run of the
same configuration.

Part 2 (``--snapshot-storage RUN.nc``): seconds per storage snapshot
(``take_snapshot``, median of 5) of an existing run's storage, e.g. the
built-in run's after 4,000 iterations.

python benchmarks/kill_and_resume.py --kills 60 --snapshot-storage openmm_ddpm_run/run.nc --out DIR
Result: benchmarks/results/kill_and_resume.json
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import yaml
from provenance import write_result  # noqa: E402  (benchmarks/, the script's directory)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, os.pardir, "tests"))
from kill_harness import kill_and_resume  # noqa: E402

CONFIG = {
    "system": {"builtin": "alanine_dipeptide_vacuum"},
    "temperatures": {"min": "300 K", "max": "600 K", "n": 4},
    "iterations": 600, "platform": "Reference", "checkpoint_interval": 10,
    "settings": {"representation": {"kind": "internal"}, "model": {"width": 32, "depth": 1, "n_steps": 6},
                 "training": {"train_steps": 5, "min_buffer_frames": 100},
                 "proposals": {"target_states": [0], "n_candidates": 4, "min_training_steps": 50, "propose_interval": 1},
                 "dynamics": {"timestep": "1.0 * femtosecond", "n_steps": 100, "stream_stride": 50},
                 "freeze_after": 300, "seed": 5},
}


def state_zero_energy(storage, first):
    """Last iteration, and the mean and correlated standard error (kT) of the 300 K state's reduced potential."""
    from openmm_ddpm.analysis.timeseries import mean_with_correlated_error
    from openmm_ddpm.multistate.storage import read_reduced_potentials

    energies = read_reduced_potentials(storage, first_iteration=first)[:, 0, 0]
    return first + len(energies) - 1, *mean_with_correlated_error(energies)[:2]


def harness(n_kills, directory, seed):
    from openmm_ddpm.app import cli

    config = os.path.join(directory, "run.yaml")
    with open(config, "w") as stream:
        yaml.safe_dump(CONFIG, stream)
    started = time.perf_counter()
    kills, _ = kill_and_resume(config, os.path.join(directory, "killed"), n_kills, CONFIG["checkpoint_interval"],
                               seed=seed, timeout=3600.0)
    killed_seconds = time.perf_counter() - started
    assert cli.main(["run", config, "--out", os.path.join(directory, "whole"), "--quiet"]) == 0
    first = CONFIG["settings"]["freeze_after"] + 1
    estimates = {name: state_zero_energy(os.path.join(directory, name, "run.nc"), first) for name in ("killed", "whole")}
    log = open(os.path.join(directory, "killed", "run.log")).read()
    interval = CONFIG["checkpoint_interval"]
    return {
        "config": CONFIG, "kills": [vars(k) for k in kills], "seconds_with_kills": killed_seconds,
        "landed": {s: sum(k.landed == s for k in kills) for s in sorted({k.landed for k in kills})},
        "snapshots_restored": log.count("restored the snapshot"),
        "storages_set_aside": log.count("set aside as"),
        "all_resumed_within_one_interval": all(k.iteration - interval <= k.resumed_from <= k.iteration for k in kills),
        "all_models_of_the_same_iteration": all(k.learner_from == (k.resumed_from if k.resumed_from > 0 else -1)
                                                for k in kills),
        # a resume from iteration 0 restores the created state, whose velocities were never assigned
        "all_velocities_kept": all(k.velocities_ok or k.resumed_from == 0 for k in kills),
        "iterations_lost": int(sum(k.iteration - k.resumed_from for k in kills)),
        "u300_killed_kT": estimates["killed"][1:], "u300_whole_kT": estimates["whole"][1:],
        "u300_difference_sigma": abs(estimates["killed"][1] - estimates["whole"][1])
        / float(np.hypot(estimates["killed"][2], estimates["whole"][2])),
    }


def snapshot_cost(storage, repeats=5):
    from openmm_ddpm.multistate.snapshots import storage_files, take_snapshot

    with tempfile.TemporaryDirectory() as scratch:
        copies = []
        for path in storage_files(storage):
            copies.append(shutil.copy(path, scratch))
        seconds = [take_snapshot(copies[0], iteration) for iteration in range(repeats)]
        sizes = {os.path.basename(p): os.path.getsize(p) for p in copies}
    return {"storage": storage, "bytes": sizes, "seconds_per_snapshot": float(np.median(seconds)),
            "seconds": seconds}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--snapshot-storage", help="an existing run's storage to time snapshots of")
    parser.add_argument("--out", default=None, help="work directory (default: a temporary one)")
    parser.add_argument("--result", default=os.path.join(HERE, "results", "kill_and_resume.json"))
    args = parser.parse_args(argv)
    result = {}
    if args.snapshot_storage:
        result["snapshot"] = snapshot_cost(args.snapshot_storage)
        print(result["snapshot"])
    if args.kills > 0:
        directory = args.out or tempfile.mkdtemp(prefix="kill_and_resume_")
        os.makedirs(directory, exist_ok=True)
        result["harness"] = harness(args.kills, directory, args.seed)
        print({k: v for k, v in result["harness"].items() if k not in ("kills", "config")})
    write_result(args.result, result, __file__, argv)


if __name__ == "__main__":
    main()
