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
    from pymbar import timeseries

    u = np.asarray(reduced_potentials, dtype=float)
    observable = np.asarray(observable, dtype=float)
    n_iterations, n_states, _ = u.shape
    temperatures = np.asarray(temperatures_kelvin, dtype=float)
    targets = np.asarray([] if target_temperatures_kelvin is None else target_temperatures_kelvin, dtype=float)
    inefficiencies = [1.0]
    for k in range(n_states):
        for series in (observable[:, k], u[:, k, k]):
            if np.ptp(series) > 0:
                inefficiencies.append(timeseries.statistical_inefficiency(series))
    thinning = int(np.ceil(max(inefficiencies)))
    kept = np.arange(0, n_iterations, thinning)
    # u_kn: every kept sample (state k, iteration i) at every sampled state, then at the target temperatures
    u_kn = u[kept].transpose(2, 1, 0).reshape(n_states, -1)  # [state l, (state k, iteration)]
    u_at_state0 = u_kn[0] * temperatures[0]
    u_targets = np.array([u_at_state0 / t for t in targets]).reshape(len(targets), -1)
    a_n = observable[kept].T.reshape(-1)
    # pymbar's uncertainty takes log(A): shift the observable to >= 1 (the mean shifts back, its error is unchanged)
    shift = 1.0 - a_n.min()
    a_n = a_n + shift
    mbar = pymbar.MBAR(u_kn, np.full(n_states, len(kept)))
    means, errors = [], []
    for u_new in list(u_kn) + list(u_targets):
        try:
            result = mbar.compute_expectations(a_n, u_kn=u_new[None], state_dependent=False)
            error = float(result["sigma"][0])
        except np.linalg.LinAlgError:  # too few samples for the asymptotic covariance
            result = mbar.compute_expectations(a_n, u_kn=u_new[None], state_dependent=False, compute_uncertainty=False)
            error = float("nan")
        means.append(float(result["mu"][0]) - shift)
        errors.append(error)
    return {"temperatures_kelvin": list(temperatures) + list(targets), "mean": means, "error": errors, "thinning": thinning}


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
    import torch
    from openmm import unit
    from openmmtools import states

    from openmm_ddpm.proposal import reduced_potentials

    if isinstance(reference_positions, unit.Quantity):
        reference_positions = reference_positions.value_in_unit(unit.nanometer)
    reference = np.asarray(reference_positions, dtype=np.float64)
    from openmm_ddpm.model import DiffusionProposalModel

    fast = {"score_on_the_way_out": True} if isinstance(model, DiffusionProposalModel) else {}
    generator = torch.Generator().manual_seed(int(seed))
    thermodynamic_state = states.ThermodynamicState(system, temperature)
    sampler_state = states.SamplerState(unit.Quantity(reference, unit.nanometer))
    positions, log_weights = [], []
    for start in range(0, int(n_samples), batch_size):
        n = min(batch_size, int(n_samples) - start)
        samples, log_q = model.sample(n, temperature, generator=generator, reference_positions=reference, **fast)
        samples = np.asarray(samples, dtype=np.float64)
        u = reduced_potentials(thermodynamic_state, sampler_state, samples, context_cache)
        log_w = -u - np.asarray(log_q, dtype=np.float64)
        log_w[~np.isfinite(log_w)] = -np.inf
        positions.append(samples)
        log_weights.append(log_w)
    return np.concatenate(positions), np.concatenate(log_weights)


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
