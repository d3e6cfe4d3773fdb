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
(``examples/double_well_remd.py`` runs it; ``tests/test_sampler_proof.py``
holds it to the exact answer.)
"""
import os
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import openmm
from openmm import unit
from openmmtools import cache, multistate, states

from openmm_ddpm.analysis import batch_means_standard_error
from openmm_ddpm.moves.streaming import SeededLangevinDynamicsMove
from openmm_ddpm.multistate import DDPMParallelTemperingSampler, read_ddpm_statistics
from openmm_ddpm.seeding import integer_seed, seed_replica_mixing
from openmm_ddpm.settings import DynamicsSettings
from openmm_ddpm.testsystems import DoubleWell2D

TEMPERATURES = [300.0, 475.0, 750.0, 1200.0] * unit.kelvin
STARTING_WELLS = (1, 1, 1, 0)


TRAINING_KELVINS = (300.0, 450.0, 600.0)  # the biased-data example's training temperatures (K)


def biased_training_data(system, frames_per_well):
    """Equal numbers of MD frames (nm) from each well at each of ``TRAINING_KELVINS``, with their temperatures (K).

    Deliberately wrong data for ``examples/double_well.py``: 50/50 where the
    exact 300 K populations are ~90/10 (``DoubleWell2D()``).
    """
    frames, kelvins = [], []
    for kelvin in TRAINING_KELVINS:
        for well in (0, 1):
            frames.append(system.sample_well_by_md(kelvin * unit.kelvin, well, frames_per_well, seed=int(kelvin) + well))
            kelvins.append(np.full(frames_per_well, kelvin))
    return np.concatenate(frames), np.concatenate(kelvins)


def make_system():
    """The double well with three bath particles (barrier 70 kJ/mol, exact P(left) 0.688 at 300 K)."""
    return DoubleWell2D(barrier_height=70.0 * unit.kilojoule_per_mole, tilt=-2.0 * unit.kilojoule_per_mole,
                        width_asymmetry=2.5, n_bath_particles=3)


DYNAMICS = DynamicsSettings(timestep=2.0 * unit.femtosecond, collision_rate=1.0 / unit.picosecond, n_steps=500,
                            stream_stride=25)


def augmented_sampler(n_iterations, freeze_after, seed):
    """The augmented sampler: proposals at 300 and 475 K, K = 8, frozen after ``freeze_after`` iterations."""
    return DDPMParallelTemperingSampler(
        number_of_iterations=n_iterations, online_analysis_interval=None,
        model=dict(width=64, depth=2, n_steps=20), dynamics=DYNAMICS,
        training=dict(train_steps=40, min_buffer_frames=200),
        proposals=dict(target_states=[0, 1], n_candidates=8, min_training_steps=200), seed=seed,
        freeze_after=freeze_after,
    )


class SeededParallelTemperingSampler(multistate.ParallelTemperingSampler):
    """openmmtools' parallel tempering, its replica mixing seeded per iteration as the augmented sampler's is."""

    def __init__(self, seed, **kwargs):
        super().__init__(**kwargs)
        self._mixing_seed = seed

    def _mix_replicas(self):
        seed_replica_mixing(self._mixing_seed, self._iteration)
        return super()._mix_replicas()


def plain_sampler(n_iterations, seed=0):
    """openmmtools' parallel tempering with the same Langevin dynamics, every random stream seeded from ``seed``.

    On the Reference platform the run then repeats exactly, so a test of it
    gives the same answer every time.
    """
    move = SeededLangevinDynamicsMove(timestep=DYNAMICS.timestep, collision_rate=DYNAMICS.collision_rate,
                                      n_steps=DYNAMICS.n_steps, reassign_velocities=False,
                                      random_seed=integer_seed(seed, "dynamics"))
    return SeededParallelTemperingSampler(seed, mcmc_moves=move, number_of_iterations=n_iterations,
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
    """P(left) at 300 K from ``first_iteration`` on, with its batch-means error (8 batches)."""
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


@dataclass(frozen=True)
class Comparison:
    """Plain and augmented parallel tempering side by side on the double well.

    Attributes
    ----------
    exact : float
        Exact P(left) at 300 K.
    estimates : dict
        ``{name: (P(left), error, wall seconds)}`` for 'plain PT' and 'augmented'.
    first_iteration : int
        Estimates use the iterations after it.
    proposals, acceptance, mean_ess_fraction : float
        Production-phase proposals (at 300 and 475 K, K = 8), their acceptance and mean ESS/(K+1).
    training_seconds, proposal_seconds : float
    directory : str
        Storage files and ``running_population.png``.
    """

    exact: float
    estimates: dict
    first_iteration: int
    proposals: float
    acceptance: float
    mean_ess_fraction: float
    training_seconds: float
    proposal_seconds: float
    directory: str


def compare(n_iterations, freeze_after, burn_in, directory=None, seed=0):
    """Run plain and augmented parallel tempering one after the other (Reference platform) and compare them."""
    cache.global_context_cache.platform = openmm.Platform.getPlatformByName("Reference")
    system = make_system()
    exact = system.exact_populations(TEMPERATURES[0]).left
    directory = directory or tempfile.mkdtemp(prefix="double_well_remd_")
    os.makedirs(directory, exist_ok=True)
    storages = {"plain PT": os.path.join(directory, "plain.nc"), "augmented": os.path.join(directory, "augmented.nc")}
    print(f"plain parallel tempering, {n_iterations} iterations ...", flush=True)
    seconds = {"plain PT": run(plain_sampler(n_iterations, seed), system, storages["plain PT"])}
    print(f"augmented parallel tempering, {n_iterations} iterations (frozen after {freeze_after}) ...", flush=True)
    seconds["augmented"] = run(augmented_sampler(n_iterations, freeze_after, seed), system, storages["augmented"])
    first = freeze_after + burn_in
    series = {name: lowest_state_wells(storage) for name, storage in storages.items()}
    estimates = {name: (*left_estimate(wells, first), seconds[name]) for name, wells in series.items()}
    plot_running_population(series, exact, first, os.path.join(directory, "running_population.png"))
    statistics = read_ddpm_statistics(storages["augmented"])
    production = statistics["ddpm_phase"] == 1
    proposals = np.nansum(statistics["ddpm_n_candidates"][production]) / 8
    return Comparison(exact, estimates, first, float(proposals),
                      float(np.nansum(statistics["ddpm_n_accepted"][production]) / max(proposals, 1)),
                      float(np.nanmean(statistics["ddpm_ess_fraction"][production])),
                      float(np.nansum(statistics["ddpm_training_seconds"])),
                      float(np.nansum(statistics["ddpm_proposal_seconds"])), directory)


def print_comparison(comparison, n_iterations):
    """The comparison as a table."""
    c = comparison
    print(f"\nP(left) at 300 K over iterations {c.first_iteration + 1}-{n_iterations}; exact {c.exact:.4f}")
    print(f"{'sampler':<12} {'P(left)':>8} {'+-':>6} {'|dev|/sigma':>12} {'wall s':>7}")
    for name, (estimate, error, seconds) in c.estimates.items():
        print(f"{name:<12} {estimate:8.3f} {error:6.3f} {abs(estimate - c.exact) / max(error, 1e-12):12.1f} {seconds:7.1f}")
    wall = c.estimates["augmented"][2]
    print(f"\nproduction phase: {c.proposals:.0f} proposals at 300 and 475 K (K = 8), acceptance {c.acceptance:.2f}, "
          f"mean ESS/(K+1) {c.mean_ess_fraction:.2f}")
    print(f"time in training {c.training_seconds:.1f} s ({c.training_seconds / wall:.0%}), in proposals "
          f"{c.proposal_seconds:.1f} s ({c.proposal_seconds / wall:.0%}) of {wall:.1f} s")
    print(f"storage and plot: {c.directory} (running_population.png)")
