"""Reading a multistate run's storage: per thermodynamic state, and the DDPM statistics per iteration.

openmmtools stores each *replica*; analysis wants each *state*. These
readers undo the replica permutation of every iteration.
"""
import numpy as np
from openmm import unit
from openmmtools import multistate


def read_temperatures_kelvin(storage):
    """Temperatures (K) of a run's thermodynamic states, in state order."""
    reporter = multistate.MultiStateReporter(storage, open_mode="r")
    try:
        thermodynamic_states, _ = reporter.read_thermodynamic_states()
    finally:
        reporter.close()
    return np.array([s.temperature.value_in_unit(unit.kelvin) for s in thermodynamic_states])


def read_state_trajectories(storage, first_iteration=1, stride=1):
    """Positions of the analysis particles of the replica in every state at each iteration.

    openmmtools writes full positions only at checkpoint iterations and the
    *analysis particles* at every iteration: create the reporter with
    ``analysis_particle_indices=range(n_atoms)`` for whole-molecule analysis
    (cheap for a small molecule), or with the atoms the analysis needs.

    Parameters
    ----------
    storage : str
        openmmtools storage file of a (finished or running) multistate run.
    first_iteration : int
        Iterations before it are skipped (equilibration).
    stride : int
        Read every ``stride``-th iteration.

    Returns
    -------
    iterations : numpy.ndarray of int, (n,)
    positions : numpy.ndarray, (n, n_states, n_analysis_particles, 3), nm
        ``positions[i, k]`` is the configuration in state k after iteration
        ``iterations[i]``.
    """
    reporter = multistate.MultiStateReporter(storage, open_mode="r")
    try:
        last = reporter.read_last_iteration(last_checkpoint=False)
        iterations = np.arange(first_iteration, last + 1, stride)
        frames = []
        for iteration in iterations:
            replica_of_state = np.argsort(reporter.read_replica_thermodynamic_states(iteration))
            try:
                sampler_states = reporter.read_sampler_states(iteration, analysis_particles_only=True)
            except ValueError as error:  # openmmtools: no particles were flagged for analysis
                raise ValueError(f"{storage} stores no analysis particles: create the MultiStateReporter "
                                 "with analysis_particle_indices") from error
            frames.append([sampler_states[r].positions.value_in_unit(unit.nanometer) for r in replica_of_state])
    finally:
        reporter.close()
    return iterations, np.asarray(frames, dtype=np.float64)


def read_reduced_potentials(storage, first_iteration=1):
    """Reduced potentials of each state's configuration evaluated at every state.

    Returns
    -------
    numpy.ndarray, (n_iterations, n_states, n_states)
        ``u[i, k, l]``: configuration of state k after iteration i, at state l (kT).
    """
    reporter = multistate.MultiStateReporter(storage, open_mode="r")
    try:
        last = reporter.read_last_iteration(last_checkpoint=False)
        energies, _, _ = reporter.read_energies()
        replica_states = reporter.read_replica_thermodynamic_states()
    finally:
        reporter.close()
    energies, replica_states = np.asarray(energies)[first_iteration : last + 1], np.asarray(replica_states)[first_iteration : last + 1]
    replica_of_state = np.argsort(replica_states, axis=1)
    return np.take_along_axis(energies, replica_of_state[:, :, None], axis=1)


def neighbour_swap_acceptance(storage, first_iteration=1):
    """Fraction of accepted swaps between neighbouring states (state order), from storage.

    Returns
    -------
    numpy.ndarray, (n_states - 1,)
        Entry k: accepted / proposed swaps between states k and k + 1.
    """
    reporter = multistate.MultiStateReporter(storage, open_mode="r")
    try:
        last = reporter.read_last_iteration(last_checkpoint=False)
        accepted, proposed = reporter.read_mixing_statistics(slice(first_iteration, last + 1))
    finally:
        reporter.close()
    accepted, proposed = np.asarray(accepted).sum(axis=0), np.asarray(proposed).sum(axis=0)
    k = np.arange(len(accepted) - 1)
    together = proposed[k, k + 1] + proposed[k + 1, k]
    return (accepted[k, k + 1] + accepted[k + 1, k]) / np.maximum(together, 1)


def count_round_trips(replica_states, n_states):
    """Round trips per replica: from the lowest state to the highest and back to the lowest.

    Parameters
    ----------
    replica_states : array_like of int, (n_iterations, n_replicas)
        The state of every replica at every iteration.
    n_states : int

    Returns
    -------
    numpy.ndarray of int, (n_replicas,)
    """
    replica_states = np.asarray(replica_states)
    trips = np.zeros(replica_states.shape[1], dtype=int)
    for replica in range(replica_states.shape[1]):
        heading_up = None  # None: the lowest state not reached yet; True: on the way up; False: on the way down
        for state in replica_states[:, replica]:
            if state == 0:
                trips[replica] += heading_up is False
                heading_up = True
            elif state == n_states - 1 and heading_up:
                heading_up = False
    return trips


def replica_round_trips(storage, first_iteration=1):
    """``count_round_trips`` of every replica of a run, from its storage."""
    reporter = multistate.MultiStateReporter(storage, open_mode="r")
    try:
        last = reporter.read_last_iteration(last_checkpoint=False)
        states = [reporter.read_replica_thermodynamic_states(i) for i in range(first_iteration, last + 1)]
    finally:
        reporter.close()
    return count_round_trips(states, len(states[0]))


def read_ddpm_statistics(storage):
    """Per-iteration DDPM statistics of a run, as a dict of numpy arrays.

    Parameters
    ----------
    storage : str
        Path of the openmmtools storage file.

    Returns
    -------
    dict
        One float array per statistic, indexed by iteration (``ddpm_phase``,
        ``ddpm_n_candidates``, ``ddpm_n_accepted``, ``ddpm_n_invalid``,
        ``ddpm_ess_fraction``, ``ddpm_training_loss``, ``ddpm_training_seconds``,
        ``ddpm_proposal_seconds``, ``ddpm_buffer_frames``,
        ``ddpm_training_steps``, ``ddpm_n_exchanges``, ``ddpm_n_exchanges_accepted``);
        NaN where an iteration wrote none.
    """
    import netCDF4

    with netCDF4.Dataset(storage, "r") as dataset:
        group = dataset.groups["online_analysis"]
        suffix = "_history"
        return {
            name[: -len(suffix)]: np.ma.filled(group.variables[name][:, 0].astype(float), np.nan)
            for name in group.variables
            if name.startswith("ddpm_") and name.endswith(suffix)
        }


def read_iteration_seconds(storage, resume_gap_seconds=600.0):
    """Wall-clock seconds of each iteration, from openmmtools' per-iteration timestamps.

    openmmtools stamps each iteration with ``time.ctime`` (1 s resolution), so a
    single duration is rounded but their sum telescopes to the true span.
    Gaps longer than ``resume_gap_seconds`` (a run stopped and resumed later)
    count as 0.

    Returns
    -------
    numpy.ndarray, (n_iterations + 1,), s
        Indexed by iteration; entry 0 (the initial state) is 0.
    """
    import time

    reporter = multistate.MultiStateReporter(storage, open_mode="r")
    try:
        last = reporter.read_last_iteration(last_checkpoint=False)
        stamps = [reporter.read_timestamp(i) for i in range(last + 1)]
    finally:
        reporter.close()
    seconds = np.array([time.mktime(time.strptime(str(s))) if str(s) else np.nan for s in stamps])
    durations = np.diff(seconds, prepend=seconds[0])
    durations[~np.isfinite(durations) | (durations < 0) | (durations > resume_gap_seconds)] = 0.0
    return durations


def production_proposal_summary(statistics, n_target_states=1):
    """The proposal moves of the production phase (``ddpm_phase == 1``), from ``read_ddpm_statistics``.

    Parameters
    ----------
    statistics : dict
        ``read_ddpm_statistics(storage)``.
    n_target_states : int
        Proposal moves per proposing iteration (one per target state).

    Returns
    -------
    dict
        ``moves``, ``acceptance`` (accepted per move; NaN without moves), ``mean_ess_fraction``,
        ``invalid_candidate_fraction``, and the run's ``training_seconds`` and ``proposal_seconds``.
    """
    production = statistics["ddpm_phase"] == 1
    proposing = production & (statistics["ddpm_n_candidates"] > 0)
    moves = int(proposing.sum()) * int(n_target_states)
    candidates = float(np.nansum(statistics["ddpm_n_candidates"][production]))
    return {
        "moves": moves,
        "acceptance": float(np.nansum(statistics["ddpm_n_accepted"][proposing]) / moves) if moves else float("nan"),
        "mean_ess_fraction": float(np.nanmean(statistics["ddpm_ess_fraction"][proposing])) if moves else float("nan"),
        "invalid_candidate_fraction": float(np.nansum(statistics["ddpm_n_invalid"][production]) / max(candidates, 1.0)),
        "training_seconds": float(np.nansum(statistics["ddpm_training_seconds"])),
        "proposal_seconds": float(np.nansum(statistics["ddpm_proposal_seconds"])),
    }
