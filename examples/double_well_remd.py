"""Augmented vs plain parallel tempering on a double well whose answer is known exactly.

The system: one particle in a double well (barrier 70 kJ/mol: no MD crossing
at any temperature of the ladder within the run) plus 3 harmonic bath
particles, so neighbouring temperatures overlap as in a small molecule. The
left well is entropically favoured (wider), the right one energetically
(deeper by 3 kJ/mol): exact P(left) = 0.688 at 300 K.

Every replica starts in the right well except the hottest, which starts in
the left. Plain parallel tempering only permutes configurations, so it holds
exactly one left-well configuration among four replicas forever, and because
that configuration is higher in energy it drifts to the hot end: the 300 K
population is wrong however long it runs. The augmented sampler learns from
all replicas online and injects exact proposals at 300 and 475 K, which move
replicas between wells and recover the exact population.

Run:  python examples/double_well_remd.py [--iterations N] [--output DIR]
"""
import argparse
import os
import tempfile
import time

import numpy as np
import openmm
import torch
from openmm import unit
from openmmtools import cache, multistate, states

from openmm_ddpm.analysis import batch_means_standard_error
from openmm_ddpm.moves import StreamingLangevinMove
from openmm_ddpm.multistate import DDPMParallelTemperingSampler, read_ddpm_statistics
from openmm_ddpm.testsystems import DoubleWell2D

TEMPERATURES = [300.0, 475.0, 750.0, 1200.0] * unit.kelvin
STARTING_WELLS = (1, 1, 1, 0)


def make_system():
    return DoubleWell2D(barrier_height=70.0 * unit.kilojoule_per_mole, tilt=-2.0 * unit.kilojoule_per_mole,
                        width_asymmetry=2.5, n_bath_particles=3)


def dynamics():
    return StreamingLangevinMove(stream_stride=25, timestep=2.0 * unit.femtosecond,
                                 collision_rate=1.0 / unit.picosecond, n_steps=500, reassign_velocities=False)


def augmented_sampler(n_iterations, freeze_after, seed=0):
    return DDPMParallelTemperingSampler(
        mcmc_moves=dynamics(), number_of_iterations=n_iterations, online_analysis_interval=None,
        model=dict(width=64, depth=2, n_steps=20),
        training=dict(train_steps=40, min_buffer_frames=200, stream_stride=25),
        proposals=dict(target_states=[0, 1], n_candidates=8, min_training_steps=200, seed=seed),
        freeze_after=freeze_after,
    )


def plain_sampler(n_iterations):
    return multistate.ParallelTemperingSampler(mcmc_moves=dynamics(), number_of_iterations=n_iterations,
                                               online_analysis_interval=None)


def run(sampler, system, storage):
    """Create and run; return the wall time in s."""
    reporter = multistate.MultiStateReporter(storage, checkpoint_interval=10, analysis_particle_indices=[0])
    sampler_states = [states.SamplerState(system.minimum_positions(w)) for w in STARTING_WELLS]
    sampler.create(states.ThermodynamicState(system.system, TEMPERATURES[0]), sampler_states, reporter,
                   temperatures=TEMPERATURES, n_temperatures=len(TEMPERATURES))
    start = time.perf_counter()
    sampler.run()
    seconds = time.perf_counter() - start
    del sampler
    reporter.close()
    return seconds


def lowest_state_wells(storage):
    """Well index (0 left, 1 right) of the 300 K replica at every iteration."""
    reporter = multistate.MultiStateReporter(storage, open_mode="r")
    try:
        n_iterations = reporter.read_last_iteration(last_checkpoint=False)
        wells = np.empty(n_iterations, dtype=int)
        for iteration in range(1, n_iterations + 1):
            replica = int(np.flatnonzero(reporter.read_replica_thermodynamic_states(iteration) == 0)[0])
            sampler_state = reporter.read_sampler_states(iteration, analysis_particles_only=True)[replica]
            x = sampler_state.positions.value_in_unit(unit.nanometer)[0, 0]  # particle 0: the double well
            wells[iteration - 1] = int(x >= 0.0)
    finally:
        reporter.close()
    return wells


def left_estimate(wells, first_iteration):
    left = (wells[first_iteration:] == 0).astype(float)
    return left.mean(), batch_means_standard_error(left, n_batches=8)


def plot_running_population(series, exact, first_iteration, path):
    """PNG of the running P(left) at 300 K of each sampler against the exact value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 3.6))
    for name, wells in series.items():
        left = (wells == 0).astype(float)
        axis.plot(np.arange(1, len(left) + 1), np.cumsum(left) / np.arange(1, len(left) + 1), label=name)
    axis.axhline(exact, color="black", linestyle="--", label=f"exact {exact:.3f}")
    axis.axvline(first_iteration, color="grey", linestyle=":", label="estimates start")
    axis.set_xlabel("iteration")
    axis.set_ylabel("running P(left) at 300 K")
    axis.set_ylim(0.0, 1.0)
    axis.legend(loc="center right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=320)
    parser.add_argument("--freeze-after", type=int, default=80)
    parser.add_argument("--burn-in", type=int, default=40, help="frozen-phase iterations dropped before estimating")
    parser.add_argument("--output", default=None, help="directory for the storage files (default: a temporary one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cache.global_context_cache.platform = openmm.Platform.getPlatformByName("Reference")
    system = make_system()
    exact = system.exact_populations(TEMPERATURES[0]).left
    directory = args.output or tempfile.mkdtemp(prefix="double_well_remd_")
    os.makedirs(directory, exist_ok=True)
    plain_storage, augmented_storage = os.path.join(directory, "plain.nc"), os.path.join(directory, "augmented.nc")

    print(f"plain parallel tempering, {args.iterations} iterations ...", flush=True)
    plain_seconds = run(plain_sampler(args.iterations), system, plain_storage)
    print(f"augmented parallel tempering, {args.iterations} iterations (frozen after {args.freeze_after}) ...", flush=True)
    augmented_seconds = run(augmented_sampler(args.iterations, args.freeze_after), system, augmented_storage)

    statistics = read_ddpm_statistics(augmented_storage)
    production = statistics["ddpm_phase"] == 1
    candidates = np.nansum(statistics["ddpm_n_candidates"][production])
    proposals = candidates / 8  # K = 8, at states 0 and 1
    accepted = np.nansum(statistics["ddpm_n_accepted"][production])
    training = np.nansum(statistics["ddpm_training_seconds"])
    proposing = np.nansum(statistics["ddpm_proposal_seconds"])

    first = args.freeze_after + args.burn_in
    print(f"\nP(left) at 300 K over iterations {first + 1}-{args.iterations}; exact {exact:.4f}")
    print(f"{'sampler':<12} {'P(left)':>8} {'+-':>6} {'|dev|/sigma':>12} {'wall s':>7}")
    series = {}
    for name, storage, seconds in (("plain PT", plain_storage, plain_seconds),
                                   ("augmented", augmented_storage, augmented_seconds)):
        series[name] = lowest_state_wells(storage)
        estimate, error = left_estimate(series[name], first)
        print(f"{name:<12} {estimate:8.3f} {error:6.3f} {abs(estimate - exact) / max(error, 1e-12):12.1f} {seconds:7.1f}")
    print(f"\nproduction phase: {proposals:.0f} proposals at 300 and 475 K (K = 8), acceptance {accepted / max(proposals, 1):.2f}, "
          f"mean ESS/(K+1) {np.nanmean(statistics['ddpm_ess_fraction'][production]):.2f}")
    print(f"time in training {training:.1f} s ({training / augmented_seconds:.0%}), in proposals {proposing:.1f} s "
          f"({proposing / augmented_seconds:.0%}) of {augmented_seconds:.1f} s")
    plot = os.path.join(directory, "running_population.png")
    plot_running_population(series, exact, first, plot)
    print(f"storage and plot: {directory} ({os.path.basename(plot)})")


if __name__ == "__main__":
    main()
