"""MBAR over a multistate run (pymbar), and with exact-density model samples as one more state.

``mbar_expectations`` estimates an observable at every state of a run and
at temperatures it never simulated; ``mbar_with_model_samples`` pools the
run's samples with model samples, the model entering MBAR as a state of
reduced potential -log q; ``reweight_run_and_model_samples`` glues a run's
storage arrays to it.
"""
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MBAREstimates:
    """An observable at every state of a run and at further temperatures, by MBAR.

    Attributes
    ----------
    temperatures_kelvin : list of float
        The sampled states', then the target temperatures (K).
    mean, error : list of float
        One entry per temperature; error NaN where too few samples remain
        for MBAR's asymptotic covariance.
    thinning : int
        Iterations between kept samples.
    """

    temperatures_kelvin: list
    mean: list
    error: list
    thinning: int


@dataclass(frozen=True)
class PooledEstimate:
    """An observable at a target state from simulated and model samples together (one MBAR).

    Attributes
    ----------
    mean, error : float
        Estimate and its MBAR error (NaN where MBAR's covariance fails).
    ess : float
        Kish effective sample size of the target weights.
    model_weight_fraction : float
        Share of the target weight carried by model samples.
    n_model : int
        Model samples used (inside the model's support).
    thinning, run_samples, run_outside_support, n_samples_drawn
        Filled in by ``reweight_run_with_model``: iterations between kept
        run samples, run samples kept (all states), the fraction of them
        outside the model's support, and model samples drawn. None otherwise.
    """

    mean: float
    error: float
    ess: float
    model_weight_fraction: float
    n_model: int
    thinning: int = None
    run_samples: int = None
    run_outside_support: float = None
    n_samples_drawn: int = None


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
    MBAREstimates
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
    u_targets = np.array([u_at_state0 / t for t in targets]).reshape(len(targets), u_kn.shape[1])
    a_n = observable[kept].T.reshape(-1)
    # BAR between neighbours as the starting free energies: from zeros pymbar's solvers fail where neighbouring
    # states differ by hundreds of kT (explicit solvent: 229 kT between 300 and 312.6 K for 1,108 atoms)
    mbar = pymbar.MBAR(u_kn, np.full(n_states, len(kept)), initialize="BAR")
    means, errors = zip(*(_mbar_expectation(mbar, a_n, u_new) for u_new in list(u_kn) + list(u_targets)))
    return MBAREstimates(list(temperatures) + list(targets), list(means), list(errors), thinning)


def mbar_or_nan(reduced_potentials, observable, temperatures_kelvin):
    """``mbar_expectations``, or NaN estimates with a warning where pymbar does not converge (states whose energies do
    not overlap, as in explicit solvent with a wide ladder)."""
    import warnings

    from pymbar.utils import ParameterError

    try:
        return mbar_expectations(reduced_potentials, observable, temperatures_kelvin)
    except ParameterError:
        warnings.warn("MBAR over the states did not converge (their energies hardly overlap): the MBAR columns are NaN; "
                      "each state's own samples still give its estimate", stacklevel=2)
        n_states = len(temperatures_kelvin)
        return MBAREstimates(list(temperatures_kelvin), [np.nan] * n_states, [np.nan] * n_states, 1)


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
    PooledEstimate
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
    return PooledEstimate(mean=mean, error=error, ess=float(1.0 / np.sum(w**2)),
                          model_weight_fraction=float(w[n_samples - n_model :].sum()), n_model=n_model)


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
    PooledEstimate
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
