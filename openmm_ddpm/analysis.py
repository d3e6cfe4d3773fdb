"""Estimates: correlation-aware error bars, basin free energies, MBAR, importance reweighting, generation."""
import numpy as np


def batch_means_standard_error(series, n_batches=20):
    """Standard error of the mean of a correlated series by batch means.

    Parameters
    ----------
    series : array_like, (n,)
    n_batches : int
        The series is cut into this many contiguous batches (the remainder at
        the start is dropped); their means are treated as independent.

    Returns
    -------
    float
    """
    series = np.asarray(series, dtype=float)
    if n_batches < 2 or len(series) < 2 * n_batches:
        raise ValueError(f"need at least {2 * n_batches} samples for {n_batches} batches, got {len(series)}")
    batch_length = len(series) // n_batches
    batches = series[len(series) - n_batches * batch_length :].reshape(n_batches, batch_length)
    return float(batches.mean(axis=1).std(ddof=1) / np.sqrt(n_batches))


def mean_with_correlated_error(series):
    """Mean and its standard error for a correlated series, by pymbar's statistical inefficiency.

    Parameters
    ----------
    series : array_like, (n,)

    Returns
    -------
    mean : float
    error : float
        sqrt(g var / n), g the statistical inefficiency (Chodera et al. 2007).
    g : float
    """
    from pymbar import timeseries

    series = np.asarray(series, dtype=float)
    if len(series) < 2:
        raise ValueError("need at least two samples")
    if np.all(series == series[0]):
        return float(series[0]), 0.0, 1.0
    g = float(timeseries.statistical_inefficiency(series))
    return float(series.mean()), float(np.sqrt(g * series.var(ddof=1) / len(series))), g


def basin_free_energy_difference_kt(in_basin):
    """dF = -ln(p / (1 - p)) in kT of a basin, with its error by the delta method.

    Parameters
    ----------
    in_basin : array_like of bool, (n,)
        Per-sample indicator of the basin (e.g. phi > 0), correlated in time.

    Returns
    -------
    p, p_error, df_kt, df_error_kt : float
        Population of the basin, its error, F(basin) - F(rest) in kT and its error.
    """
    p, p_error, _ = mean_with_correlated_error(np.asarray(in_basin, dtype=float))
    return (p, p_error) + population_free_energy_kt(p, p_error)


def population_free_energy_kt(p, p_error):
    """dF = -ln(p / (1 - p)) in kT of a basin of population p, and its delta-method error.

    Returns (inf or -inf, nan) when p is 0 or 1 (no sample on one side).
    """
    if not 0.0 < p < 1.0:
        return float("inf") if p <= 0.0 else float("-inf"), float("nan")
    return float(-np.log(p / (1.0 - p))), float(p_error / (p * (1.0 - p)))


def backbone_dihedrals(positions_nm, topology):
    """phi and psi (rad) of every frame with mdtraj, (n_frames, n_phi) and (n_frames, n_psi).

    Parameters
    ----------
    positions_nm : array_like, (n_frames, n_atoms, 3), nm
    topology : openmm.app.Topology or mdtraj.Topology
    """
    import mdtraj

    if not isinstance(topology, mdtraj.Topology):
        topology = mdtraj.Topology.from_openmm(topology)
    trajectory = mdtraj.Trajectory(np.asarray(positions_nm, dtype=np.float32).reshape(-1, topology.n_atoms, 3), topology)
    _, phi = mdtraj.compute_phi(trajectory)
    _, psi = mdtraj.compute_psi(trajectory)
    return phi, psi


# --- MBAR, reweighting and generation -----------------------------------------------------


def mbar_expectations(reduced_potentials, observable, temperatures_kelvin, target_temperatures_kelvin=None):
    """Expectation of an observable at every state, and at other temperatures, by MBAR.

    Every state's samples enter every estimate (pymbar.MBAR). Samples are
    thinned by the largest statistical inefficiency of the observable and
    of the reduced potential across states, so the MBAR error bars, which
    assume independent samples, hold for correlated chains.

    Parameters
    ----------
    reduced_potentials : numpy.ndarray, (n_iterations, n_states, n_states)
        From ``read_reduced_potentials``.
    observable : numpy.ndarray, (n_iterations, n_states)
        Observable of each state's configuration (e.g. phi > 0 as 0/1).
    temperatures_kelvin : array_like, (n_states,)
        Temperatures of the sampled states (K); the states must differ only
        in temperature for ``target_temperatures_kelvin``.
    target_temperatures_kelvin : array_like, optional
        Further temperatures (K) to reweight to; u = (T_0 / T) u_0 there.

    Returns
    -------
    dict
        ``temperatures_kelvin``, ``mean``, ``error`` (one entry per sampled
        state, then per target temperature; error NaN where too few samples
        remain for MBAR's asymptotic covariance) and ``thinning``
        (iterations between kept samples).
    """
    import pymbar

    u = np.asarray(reduced_potentials, dtype=float)
    observable = np.asarray(observable, dtype=float)
    n_iterations, n_states, _ = u.shape
    temperatures = np.asarray(temperatures_kelvin, dtype=float)
    targets = np.asarray([] if target_temperatures_kelvin is None else target_temperatures_kelvin, dtype=float)
    thinning = mbar_thinning(u, observable)
    kept = np.arange(0, n_iterations, thinning)
    # u_kn: every kept sample (state k, iteration i) at every sampled state, then at the target temperatures
    u_kn = u[kept].transpose(2, 1, 0).reshape(n_states, -1)  # [state l, (state k, iteration)]
    u_at_state0 = u_kn[0] * temperatures[0]
    u_targets = np.array([u_at_state0 / t for t in targets]).reshape(len(targets), -1)
    a_n = observable[kept].T.reshape(-1)
    mbar = pymbar.MBAR(u_kn, np.full(n_states, len(kept)))
    means, errors = zip(*(_mbar_expectation(mbar, a_n, u_new) for u_new in list(u_kn) + list(u_targets)))
    return {"temperatures_kelvin": list(temperatures) + list(targets), "mean": list(means), "error": list(errors),
            "thinning": thinning}


def mbar_thinning(reduced_potentials, observable):
    """Iterations between effectively independent samples of a multistate run.

    The largest statistical inefficiency (pymbar.timeseries) of the
    observable and of the reduced potential of every state's series,
    rounded up; MBAR's error bars assume independent samples, so a run is
    thinned by it before MBAR.

    Parameters
    ----------
    reduced_potentials : numpy.ndarray, (n_iterations, n_states, n_states)
        From ``read_reduced_potentials``.
    observable : numpy.ndarray, (n_iterations, n_states)

    Returns
    -------
    int
    """
    from pymbar import timeseries

    u = np.asarray(reduced_potentials, dtype=float)
    observable = np.asarray(observable, dtype=float)
    inefficiencies = [1.0]
    for k in range(u.shape[1]):
        for series in (observable[:, k], u[:, k, k]):
            if np.ptp(series) > 0:
                inefficiencies.append(timeseries.statistical_inefficiency(series))
    return int(np.ceil(max(inefficiencies)))


def _mbar_expectation(mbar, observable_n, u_target_n):
    """MBAR's expectation of an observable at a target state and its error (NaN where its covariance fails)."""
    # pymbar's uncertainty takes log(A): shift the observable to >= 1 (the mean shifts back, its error is unchanged)
    shift = 1.0 - np.min(observable_n)
    a_n = np.asarray(observable_n, dtype=float) + shift
    try:
        result = mbar.compute_expectations(a_n, u_kn=np.asarray(u_target_n)[None], state_dependent=False)
        error = float(result["sigma"][0])
    except np.linalg.LinAlgError:  # too few samples for the asymptotic covariance
        result = mbar.compute_expectations(a_n, u_kn=np.asarray(u_target_n)[None], state_dependent=False,
                                           compute_uncertainty=False)
        error = float("nan")
    return float(result["mu"][0]) - shift, error


def mbar_with_model_samples(u_kn, n_k, log_q_n, observable_n, u_target_n):
    """Expectation at a target state from simulated samples and exact-density model samples together.

    The model joins MBAR as one more state, whose reduced potential is
    -log q. Every sample, simulated or generated, is then weighted at the
    target by exp(-u_target) / sum_j N_j exp(f_j - u_j), the sum running
    over the simulated states and the model (MBAR; with known normalisations
    this is the balance heuristic of multiple importance sampling). A basin
    the model misses keeps the weight the simulated states give it, so the
    estimate cannot be confidently wrong the way self-normalised importance
    sampling over the model alone can (``reweighted_expectation``); where
    the model is good its samples cut the error. The estimate is consistent
    whenever the states and the model together cover the target.

    Parameters
    ----------
    u_kn : array_like, (K, N)
        Reduced potentials (kT) of all N samples at the K simulated states:
        ``n_k[0]`` samples of state 0 first, then of state 1, ..., then the
        model's samples. Non-finite: density 0 there (e.g. a model sample
        with flipped chirality).
    n_k : array_like of int, (K,)
        Samples of each simulated state; their sum is less than N by the
        number of model samples. MBAR's error assumes independent samples:
        thin correlated runs first (``mbar_thinning``).
    log_q_n : array_like, (N,)
        The model's log-density of every sample, in the measure in which
        exp(-u) is the Boltzmann density (``DiffusionProposalModel.log_prob``);
        NaN or -inf outside its support. Model samples outside it (outside
        the representation's domain) are dropped: the others are samples
        of q restricted to the domain, whose normalisation MBAR estimates.
    observable_n : array_like, (N,)
    u_target_n : array_like, (N,)
        Reduced potentials at the target state (kT); non-finite: density 0.

    Returns
    -------
    dict
        ``mean`` and ``error`` of the observable at the target (error NaN
        where MBAR's covariance fails), ``ess`` (Kish effective sample size
        of the target weights), ``model_weight_fraction`` (the share of the
        target weight carried by model samples), ``n_model`` (model samples used).
    """
    import pymbar
    from scipy.special import logsumexp

    n_k = np.asarray(n_k, dtype=int)
    u_kn = _infinite_where_undefined(np.atleast_2d(np.asarray(u_kn, dtype=float)))
    u_model = _infinite_where_undefined(-np.asarray(log_q_n, dtype=float))
    u_target = _infinite_where_undefined(np.asarray(u_target_n, dtype=float))
    n_samples = u_kn.shape[1]
    n_model = n_samples - int(n_k.sum())
    if u_kn.shape[0] != len(n_k) or n_model < 0 or len(u_model) != n_samples or len(u_target) != n_samples:
        raise ValueError(f"u_kn {u_kn.shape}, n_k {n_k.tolist()}, log_q_n {len(u_model)} and u_target_n "
                         f"{len(u_target)} do not describe the same samples")
    # a model sample outside its own support (outside the representation's domain) is dropped: the others are
    # samples of q restricted to the domain, whose normalisation MBAR estimates like any state's
    kept = np.isfinite(u_model) | (np.arange(n_samples) < n_samples - n_model)
    u_kn, u_model, u_target = u_kn[:, kept], u_model[kept], u_target[kept]
    observable_n = np.asarray(observable_n, dtype=float)[kept]
    n_samples, n_model = int(kept.sum()), n_model - int((~kept).sum())
    initial_f_k = _initial_free_energies(u_kn, n_k, u_model, u_target, n_model)
    mbar = pymbar.MBAR(np.vstack([u_kn, u_model]), np.append(n_k, n_model), initial_f_k=initial_f_k)
    mean, error = _mbar_expectation(mbar, observable_n, u_target)
    log_mixture = logsumexp(mbar.f_k[:, None] - mbar.u_kn, b=np.append(n_k, n_model)[:, None], axis=0)
    log_w = -u_target - log_mixture
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    return {"mean": mean, "error": error, "ess": float(1.0 / np.sum(w**2)),
            "model_weight_fraction": float(w[n_samples - n_model :].sum()), "n_model": n_model}


def _initial_free_energies(u_kn, n_k, u_model, u_target, n_model):
    """A starting point for MBAR's free energies of the simulated states and the model.

    The model's -log q and the states' reduced potentials differ by
    hundreds of kT on molecules (the states' log partition functions),
    which MBAR's solvers do not cross from zeros. The states' free
    energies come from MBAR over them alone; the model's from
    f_model = f_target + log E_q[exp(-u_target) / q] over its own samples.
    """
    import pymbar
    from scipy.special import logsumexp

    n_run = int(np.sum(n_k))
    f_states = pymbar.MBAR(u_kn[:, :n_run], n_k, initialize="BAR").f_k
    log_mixture = logsumexp(f_states[:, None] - u_kn[:, :n_run], b=np.asarray(n_k)[:, None], axis=0)
    f_target = -logsumexp(-u_target[:n_run] - log_mixture)
    if n_model == 0:
        return np.append(f_states, 0.0)
    log_w = u_model[n_run:] - u_target[n_run:]
    return np.append(f_states, f_target + logsumexp(log_w) - np.log(n_model))


def _infinite_where_undefined(reduced_potential):
    """+inf (density 0) where a reduced potential is NaN or infinite."""
    return np.where(np.isfinite(reduced_potential), reduced_potential, np.inf)


def reweight_run_and_model_samples(reduced_potentials, observable, temperatures_kelvin, target_kelvin, run_log_q,
                                   model_u_target, model_log_q, model_observable):
    """An observable at any temperature from a run's (thinned) samples and the model's samples there.

    Glue between a run's storage and ``mbar_with_model_samples`` for
    states that differ only in temperature (u = (T_0 / T) u_0).

    Parameters
    ----------
    reduced_potentials : numpy.ndarray, (n, n_states, n_states)
        ``read_reduced_potentials`` at the iterations kept (thinned by
        ``mbar_thinning``, so that they are effectively independent).
    observable : numpy.ndarray, (n, n_states)
        The observable of each state's configuration at those iterations.
    temperatures_kelvin : array_like, (n_states,)
    target_kelvin : float
    run_log_q : numpy.ndarray, (n, n_states)
        The model's log q at ``target_kelvin`` of each of those configurations (NaN outside its support).
    model_u_target, model_log_q, model_observable : array_like, (m,)
        Reduced potential at ``target_kelvin``, log q, and observable of m model samples drawn at ``target_kelvin``.

    Returns
    -------
    dict
        As ``mbar_with_model_samples``.
    """
    u = np.asarray(reduced_potentials, dtype=float)
    n_iterations, n_states, _ = u.shape
    temperatures = np.asarray(temperatures_kelvin, dtype=float)
    run_u_kn = u.transpose(2, 1, 0).reshape(n_states, -1)  # [state l, (state k, iteration)]
    model_u_kn = np.asarray(model_u_target, dtype=float)[None, :] * float(target_kelvin) / temperatures[:, None]
    u_kn = np.hstack([run_u_kn, model_u_kn])
    u_target = u_kn[0] * temperatures[0] / float(target_kelvin)
    log_q = np.concatenate([np.asarray(run_log_q, dtype=float).T.reshape(-1), np.asarray(model_log_q, dtype=float)])
    values = np.concatenate([np.asarray(observable, dtype=float).T.reshape(-1), np.asarray(model_observable, dtype=float)])
    return mbar_with_model_samples(u_kn, np.full(n_states, n_iterations), log_q, values, u_target)


def free_energy_surface(phi, psi, bins=36):
    """Free-energy surface F(phi, psi) in kT from dihedral samples, minimum at 0.

    Parameters
    ----------
    phi, psi : array_like, (n,), rad
    bins : int
        Bins per axis over [-pi, pi).

    Returns
    -------
    free_energy : numpy.ndarray, (bins, bins)
        -ln p per bin (kT), inf where the bin is empty; ``[i, j]`` is phi bin i, psi bin j.
    edges : numpy.ndarray, (bins + 1,), rad
    """
    edges = np.linspace(-np.pi, np.pi, bins + 1)
    counts, _, _ = np.histogram2d(np.asarray(phi), np.asarray(psi), bins=[edges, edges])
    with np.errstate(divide="ignore"):
        free_energy = -np.log(counts / counts.sum())
    return free_energy - free_energy[np.isfinite(free_energy)].min(), edges


def reweighted_expectation(log_weights, observable):
    """Self-normalized importance-sampling estimate with its delta-method error and ESS.

    Parameters
    ----------
    log_weights : array_like, (n,)
        Unnormalized log-weights (-inf or NaN: weight 0).
    observable : array_like, (n,)

    Returns
    -------
    mean, error, ess : float
        sum w f / sum w; sqrt(sum wbar^2 (f - mean)^2), wbar = w / sum w
        (Owen 2013, eq. 9.9); Kish ESS.
    """
    log_weights = np.asarray(log_weights, dtype=float)
    observable = np.asarray(observable, dtype=float)
    valid = np.isfinite(log_weights)
    if not valid.any():
        return float("nan"), float("nan"), 0.0
    w = np.exp(log_weights[valid] - log_weights[valid].max())
    w_bar = w / w.sum()
    f = observable[valid]
    mean = float(np.sum(w_bar * f))
    error = float(np.sqrt(np.sum(w_bar**2 * (f - mean) ** 2)))
    return mean, error, float(1.0 / np.sum(w_bar**2))


def generate_at_temperature(model, system, temperature, n_samples, reference_positions, batch_size=64, seed=0,
                            context_cache=None):
    """Model samples at any temperature (simulated or not) with their importance weights.

    Each sample y ~ q_T gets log w = -u_T(y) - log q_T(y), u_T the reduced
    potential at T; weighted averages are then exact in the limit of many
    samples (``reweighted_expectation``), and the ESS says how many
    Boltzmann samples they are worth.

    Parameters
    ----------
    model : openmm_ddpm.model.DiffusionProposalModel
    system : openmm.System
    temperature : openmm.unit.Quantity (temperature)
    n_samples : int
    reference_positions : openmm.unit.Quantity or array_like (nm), (n_atoms, 3)
        A valid structure: its rigid-body frame is kept (internal coordinates).
    batch_size : int
    seed : int
    context_cache : openmmtools.cache.ContextCache, optional

    Returns
    -------
    positions : numpy.ndarray, (n, n_atoms, 3), nm
    log_weights : numpy.ndarray, (n,)
        -inf where a sample is outside the support or its energy is not finite.
    """
    positions, u, log_q = generate_with_densities(model, system, temperature, n_samples, reference_positions,
                                                  batch_size, seed, context_cache)
    log_weights = -u - log_q
    log_weights[~np.isfinite(log_weights)] = -np.inf
    return positions, log_weights


def generate_with_densities(model, system, temperature, n_samples, reference_positions, batch_size=64, seed=0,
                            context_cache=None):
    """Model samples at a temperature with their reduced potential and exact log q apart.

    Parameters and samples as ``generate_at_temperature`` (same seed, same samples).

    Returns
    -------
    positions : numpy.ndarray, (n, n_atoms, 3), nm
    reduced_potentials : numpy.ndarray, (n,)
        u_T (kT); inf where the energy is not finite.
    log_q : numpy.ndarray, (n,)
        NaN outside the model's support.
    """
    import torch
    from openmm import unit
    from openmmtools import states

    from openmm_ddpm.model import DiffusionProposalModel
    from openmm_ddpm.proposal import reduced_potentials

    if isinstance(reference_positions, unit.Quantity):
        reference_positions = reference_positions.value_in_unit(unit.nanometer)
    reference = np.asarray(reference_positions, dtype=np.float64)
    fast = {"score_on_the_way_out": True} if isinstance(model, DiffusionProposalModel) else {}
    generator = torch.Generator().manual_seed(int(seed))
    thermodynamic_state = states.ThermodynamicState(system, temperature)
    sampler_state = states.SamplerState(unit.Quantity(reference, unit.nanometer))
    positions, energies, log_qs = [], [], []
    for start in range(0, int(n_samples), batch_size):
        n = min(batch_size, int(n_samples) - start)
        samples, log_q = model.sample(n, temperature, generator=generator, reference_positions=reference, **fast)
        samples = np.asarray(samples, dtype=np.float64)
        u = np.asarray(reduced_potentials(thermodynamic_state, sampler_state, samples, context_cache), dtype=np.float64)
        positions.append(samples)
        energies.append(np.where(np.isfinite(u), u, np.inf))
        log_qs.append(np.asarray(log_q, dtype=np.float64))
    return np.concatenate(positions), np.concatenate(energies), np.concatenate(log_qs)


def reweight_run_with_model(storage, model, system, first_iteration, temperature, samples, observable,
                            reference_positions, seed=0, batch_size=64, context_cache=None):
    """An observable at any temperature from a run's production samples and fresh model samples there, by MBAR.

    Reads the states' configurations and reduced potentials from the
    run's storage (states that differ only in temperature), thins them
    by their statistical inefficiency (``mbar_thinning``), scores each kept
    configuration with the model's exact log q at ``temperature``, draws
    model samples there (or takes given ones), and pools everything
    (``mbar_with_model_samples``).

    Parameters
    ----------
    storage : str
        openmmtools storage of a finished run, with every atom as analysis particle.
    model : openmm_ddpm.model.DiffusionProposalModel
        A fixed model (e.g. ``load_exported_model``); scoring the run costs one encoding per kept configuration.
    system : openmm.System
        The run's system.
    first_iteration : int
        First iteration used: one after the model froze, so the run's samples come from an exact chain.
    temperature : openmm.unit.Quantity (temperature)
    samples : int or tuple
        How many model samples to draw at ``temperature``, or samples drawn
        there already: ``(positions, reduced_potentials, log_q)`` of
        ``generate_with_densities``.
    observable : callable
        positions (n, n_atoms, 3) nm -> values (n,).
    reference_positions : array_like (n_atoms, 3), nm
        A valid structure whose rigid-body frame the model samples keep.
    seed : int
        Seed of the model samples (the same samples as ``generate_at_temperature``) and of the relabelling of the
        run's configurations.
    batch_size : int
    context_cache : openmmtools.cache.ContextCache, optional

    Returns
    -------
    dict
        As ``mbar_with_model_samples``, plus ``thinning``, ``run_samples`` (kept, all states),
        ``run_outside_support`` (fraction of them the model cannot score) and ``n_samples_drawn``
        (model samples, those outside the model's support included).
    """
    from openmm import unit

    from openmm_ddpm.model import temperature_kelvin
    from openmm_ddpm.storage import read_reduced_potentials, read_state_trajectories, read_temperatures_kelvin

    kelvin = temperature_kelvin(temperature)
    _, run_positions = read_state_trajectories(storage, first_iteration=first_iteration)
    reduced = read_reduced_potentials(storage, first_iteration=first_iteration)
    n_iterations, n_states, n_atoms, _ = run_positions.shape
    run_values = np.asarray(observable(run_positions.reshape(-1, n_atoms, 3)), dtype=float).reshape(n_iterations, n_states)
    thinning = mbar_thinning(reduced, run_values)
    kept = np.arange(0, n_iterations, thinning)
    relabelled = model.relabel(run_positions[kept].reshape(-1, n_atoms, 3), np.random.default_rng(seed))
    run_log_q = model.log_prob(relabelled, kelvin * unit.kelvin).reshape(len(kept), n_states)
    if isinstance(samples, tuple):
        positions, u_target, log_q = samples
    else:
        positions, u_target, log_q = generate_with_densities(model, system, kelvin * unit.kelvin, samples,
                                                             reference_positions, batch_size, seed, context_cache)
    result = reweight_run_and_model_samples(reduced[kept], run_values[kept], read_temperatures_kelvin(storage), kelvin,
                                            run_log_q, u_target, log_q, observable(positions))
    result.update(thinning=thinning, run_samples=int(run_log_q.size), n_samples_drawn=len(log_q),
                  run_outside_support=float(np.mean(~np.isfinite(run_log_q))))
    return result


def log_weight_gap(ddpm, system, temperature, frames_before_freeze, n_frames=200, seed=0):
    """Mean log w at a temperature on training frames minus held-out frames (an overfitting check).

    Training frames: frames of that temperature that entered the buffer
    before the model froze; held out: frames streamed after the freeze,
    never trained on. log w = -u - log q with the proposal's own log-density
    (rotor multiplicity included), after the relabelling a move applies.
    A strongly positive gap means the model fits its training frames better
    than fresh ones.

    Parameters
    ----------
    ddpm : openmm_ddpm.sampler.OnlineDDPM
    system : openmm.System
    temperature : openmm.unit.Quantity (temperature)
    frames_before_freeze : int
        Frames added to the buffer up to the freeze.
    n_frames : int
        Frames per group.
    seed : int

    Returns
    -------
    gap : float
        nats; NaN if either group is empty.
    means : dict
        ``train`` and ``held_out`` mean log w.
    log_weights : dict
        ``train`` and ``held_out`` log w of every frame used (NaN outside the support).
    """
    from openmm import unit
    from openmmtools import states

    from openmm_ddpm.proposal import reduced_potentials

    positions, kelvins = ddpm.buffer.arrays()
    index = np.arange(len(positions)) - (len(positions) - ddpm.buffer.n_added)  # order of arrival
    at_temperature = np.isclose(kelvins, temperature.value_in_unit(unit.kelvin))
    model = ddpm.proposal_model
    rng = np.random.default_rng(seed)
    thermodynamic_state = states.ThermodynamicState(system, temperature)
    means, log_weights = {}, {}
    for name, mask in (("train", at_temperature & (index < frames_before_freeze)),
                       ("held_out", at_temperature & (index >= frames_before_freeze))):
        if not mask.any():
            means[name], log_weights[name] = float("nan"), np.array([])
            continue
        chosen = rng.choice(np.flatnonzero(mask), size=min(n_frames, int(mask.sum())), replace=False)
        frames = model.relabel(positions[chosen].astype(np.float64), rng)
        sampler_state = states.SamplerState(unit.Quantity(frames[0], unit.nanometer))
        log_w = -reduced_potentials(thermodynamic_state, sampler_state, frames) - model.log_prob(frames, temperature)
        means[name] = float(np.mean(log_w[np.isfinite(log_w)]))
        log_weights[name] = log_w
    return means["train"] - means["held_out"], means, log_weights


def expected_mh_acceptance(log_weights_target, log_weights_model):
    """Stationary acceptance of independence Metropolis-Hastings, from two weight samples.

    With x ~ pi (e.g. held-out MD frames) and y ~ q (model samples), the
    acceptance of a K = 1 move in equilibrium is E[min(1, w(y) / w(x))];
    averaging over every (x, y) pair gives it without running a chain,
    with far less noise than counting a few hundred accepted moves.

    Parameters
    ----------
    log_weights_target : array_like, (n,)
        log w = -u - log q of samples of the target (-inf/NaN: outside the support, dropped).
    log_weights_model : array_like, (m,)
        log w of model samples (-inf/NaN: weight 0, never accepted).

    Returns
    -------
    float
    """
    log_x = np.asarray(log_weights_target, dtype=float)
    log_y = np.asarray(log_weights_model, dtype=float)
    log_x = log_x[np.isfinite(log_x)]
    log_y = np.where(np.isfinite(log_y), log_y, -np.inf)
    if len(log_x) == 0 or len(log_y) == 0:
        return float("nan")
    difference = np.minimum(log_y[None, :] - log_x[:, None], 0.0)
    return float(np.mean(np.exp(difference)))
