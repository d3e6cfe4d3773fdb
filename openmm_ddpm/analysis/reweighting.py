"""Importance reweighting of model samples, and generation at any temperature with exact weights.

Each model sample y ~ q_T gets log w = -u_T(y) - log q_T(y); self-normalised
averages (``reweighted_expectation``) are then consistent, and the pooled
estimate (``reweight_run_with_model``) adds a run's own samples by MBAR.
"""
import dataclasses
from dataclasses import dataclass

import numpy as np

from openmm_ddpm.analysis.mbar import mbar_thinning, reweight_run_and_model_samples


@dataclass(frozen=True)
class WeightedEstimate:
    """A self-normalised importance-sampling estimate.

    Attributes
    ----------
    mean : float
    error : float
        Delta-method standard error (optimistic when a few weights dominate: see ``diagnostics.basin_ess``).
    ess : float
        Kish effective sample size of the weights.
    """

    mean: float
    error: float
    ess: float


def reweighted_expectation(log_weights, observable):
    """Self-normalized importance-sampling estimate with its delta-method error and ESS.

    Parameters
    ----------
    log_weights : array_like, (n,)
        Unnormalized log-weights (-inf or NaN: weight 0).
    observable : array_like, (n,)

    Returns
    -------
    WeightedEstimate
        mean sum w f / sum w; error sqrt(sum wbar^2 (f - mean)^2), wbar = w / sum w
        (Owen 2013, eq. 9.9); Kish ESS.
    """
    log_weights = np.asarray(log_weights, dtype=float)
    observable = np.asarray(observable, dtype=float)
    valid = np.isfinite(log_weights)
    if not valid.any():
        return WeightedEstimate(float("nan"), float("nan"), 0.0)
    w = np.exp(log_weights[valid] - log_weights[valid].max())
    w_bar = w / w.sum()
    f = observable[valid]
    mean = float(np.sum(w_bar * f))
    error = float(np.sqrt(np.sum(w_bar**2 * (f - mean) ** 2)))
    return WeightedEstimate(mean, error, float(1.0 / np.sum(w_bar**2)))


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

    from openmm_ddpm.model.proposal_model import DiffusionProposalModel
    from openmm_ddpm.model.protocol import draw_candidates
    from openmm_ddpm.moves.proposal import reduced_potentials

    if getattr(model, "conditioning", "temperature") != "temperature":  # analysis/ does not import multistate/
        raise ValueError(f"this model is conditioned on its {model.conditioning} (a ladder of states at one temperature), "
                         "not on temperature: its draws at a temperature belong to no state; draw for state k with "
                         "GenerativeProposal(model, condition=sampler.conditioning.of(k))")
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
        samples, log_q = draw_candidates(model, n, temperature, generator, reference, **fast)
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
    openmm_ddpm.analysis.mbar.PooledEstimate
        With ``thinning``, ``run_samples`` (kept, all states), ``run_outside_support``
        (fraction of them the model cannot score) and ``n_samples_drawn`` (model samples,
        those outside the model's support included) filled in.
    """
    from openmm import unit

    from openmm_ddpm.model.protocol import relabel
    from openmm_ddpm.multistate.storage import (
        read_reduced_potentials,
        read_state_trajectories,
        read_temperatures_kelvin,
    )
    from openmm_ddpm.units import temperature_kelvin

    kelvin = temperature_kelvin(temperature)
    _, run_positions = read_state_trajectories(storage, first_iteration=first_iteration)
    reduced = read_reduced_potentials(storage, first_iteration=first_iteration)
    n_iterations, n_states, n_atoms, _ = run_positions.shape
    run_values = np.asarray(observable(run_positions.reshape(-1, n_atoms, 3)), dtype=float).reshape(n_iterations, n_states)
    thinning = mbar_thinning(reduced, run_values)
    kept = np.arange(0, n_iterations, thinning)
    relabelled = relabel(model, run_positions[kept].reshape(-1, n_atoms, 3), np.random.default_rng(seed))
    run_log_q = model.log_prob(relabelled, kelvin * unit.kelvin).reshape(len(kept), n_states)
    if isinstance(samples, tuple):
        positions, u_target, log_q = samples
    else:
        positions, u_target, log_q = generate_with_densities(model, system, kelvin * unit.kelvin, samples,
                                                             reference_positions, batch_size, seed, context_cache)
    result = reweight_run_and_model_samples(reduced[kept], run_values[kept], read_temperatures_kelvin(storage), kelvin,
                                            run_log_q, u_target, log_q, observable(positions))
    return dataclasses.replace(result, thinning=thinning, run_samples=int(run_log_q.size), n_samples_drawn=len(log_q),
                               run_outside_support=float(np.mean(~np.isfinite(run_log_q))))
