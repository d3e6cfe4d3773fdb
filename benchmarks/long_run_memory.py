"""Issue 20, load: a long CPU run at small settings, its memory and storage sampled along the way.

Alanine dipeptide in vacuum, 4 replicas 300-600 K, 100 x 1 fs per
iteration, a small model training every iteration with a buffer capped at
``--buffer-capacity`` frames (reached early), proposals every iteration,
checkpoints (and storage snapshots) every 50 iterations, for ``--minutes``
of wall time. Every ``--every`` iterations it records the resident memory
of the process (VmRSS from /proc), the buffer's frames and the bytes of the
run directory (storage, checkpoints, snapshots). Claims checked: the buffer
stays at its capacity, memory does not grow with iterations once the buffer
is full, the storage grows linearly.

python benchmarks/long_run_memory.py --minutes 30 --out DIR
Result: benchmarks/results/long_run_memory.json (+ long_run_memory.png)
"""
import argparse
import os
import tempfile
import time

import numpy as np
import openmm
import torch
from openmm import unit
from openmmtools import cache, multistate, states, testsystems
from provenance import write_result  # noqa: E402  (benchmarks/, the script's directory)

from openmm_ddpm import DDPMParallelTemperingSampler

HERE = os.path.dirname(os.path.abspath(__file__))


def resident_megabytes():
    with open("/proc/self/status") as stream:
        for line in stream:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def directory_megabytes(path):
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names) / 2**20


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--buffer-capacity", type=int, default=20_000)
    parser.add_argument("--out", default=None)
    parser.add_argument("--result", default=os.path.join(HERE, "results", "long_run_memory.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    directory = args.out or tempfile.mkdtemp(prefix="long_run_")
    os.makedirs(directory, exist_ok=True)
    cache.global_context_cache.platform = openmm.Platform.getPlatformByName("Reference")
    molecule = testsystems.AlanineDipeptideVacuum(constraints=None)
    sampler = DDPMParallelTemperingSampler(
        number_of_iterations=10**7, online_analysis_interval=None, freeze_after=None, seed=0,
        representation={"kind": "internal"}, model={"width": 32, "depth": 1, "n_steps": 6},
        training={"train_steps": 2, "min_buffer_frames": 200, "buffer_capacity": args.buffer_capacity, "batch_size": 64},
        proposals={"n_candidates": 4, "min_training_steps": 100, "propose_interval": 1},
        dynamics={"timestep": 1.0 * unit.femtosecond, "n_steps": 100, "stream_stride": 50})
    reporter = multistate.MultiStateReporter(os.path.join(directory, "run.nc"), checkpoint_interval=50,
                                             analysis_particle_indices=list(range(22)))
    sampler.create(states.ThermodynamicState(molecule.system, 300 * unit.kelvin), states.SamplerState(molecule.positions),
                   reporter, min_temperature=300 * unit.kelvin, max_temperature=600 * unit.kelvin, n_temperatures=4)
    samples, start = [], time.perf_counter()
    while time.perf_counter() - start < 60.0 * args.minutes:
        sampler.run(args.every)
        samples.append({"iteration": sampler.iteration, "seconds": time.perf_counter() - start,
                        "rss_mb": resident_megabytes(), "buffer_frames": len(sampler.learner.buffer),
                        "storage_mb": os.path.getsize(os.path.join(directory, "run.nc")) / 2**20,
                        "directory_mb": directory_megabytes(directory)})
        print(samples[-1], flush=True)
    reporter.close()
    iterations = np.array([s["iteration"] for s in samples], dtype=float)
    rss = np.array([s["rss_mb"] for s in samples])
    full = np.array([s["buffer_frames"] for s in samples]) >= args.buffer_capacity
    late = full & (iterations >= iterations[full][0] + (iterations[-1] - iterations[full][0]) / 2) if full.any() else full
    result = {
        "samples": samples,
        "simulated_ns_per_replica": float(iterations[-1] * 100 * 1e-6),
        "rss_mb_first_full_buffer": float(rss[full][0]) if full.any() else None,
        "rss_mb_last": float(rss[-1]),
        "rss_slope_mb_per_1000_iterations_second_half": float(np.polyfit(iterations[late], rss[late], 1)[0] * 1000)
        if late.sum() >= 3 else None,
        "storage_mb_per_1000_iterations": float(np.polyfit(iterations, [s["storage_mb"] for s in samples], 1)[0] * 1000),
        "buffer_frames_max": int(max(s["buffer_frames"] for s in samples)),
    }
    write_result(args.result, result, __file__, argv)
    plot(samples, os.path.splitext(args.result)[0] + ".png")


def plot(samples, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    iterations = [s["iteration"] for s in samples]
    figure, axes = plt.subplots(3, 1, figsize=(6.5, 7), sharex=True)
    for axis, key, label in zip(axes, ("rss_mb", "buffer_frames", "directory_mb"),
                                ("resident memory (MB)", "buffer frames", "run directory (MB)")):
        axis.plot(iterations, [s[key] for s in samples], lw=1.2)
        axis.set_ylabel(label)
    axes[2].plot(iterations, [s["storage_mb"] for s in samples], lw=1.0, ls="--", label="storage run.nc")
    axes[2].legend()
    axes[-1].set_xlabel("iteration")
    axes[0].set_title("a long CPU run: memory and storage over iterations")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
