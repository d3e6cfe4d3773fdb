"""Stratified importance sampling: each region of configuration space weighed from draws of its own proposal.

A rare basin gets too few draws from a model of the whole ensemble for its
weight to be seen (``diagnostics.basin_ess``). Split the space into
regions (strata) and draw each from a proposal that covers it, e.g. a model
trained on that basin alone: with exact, normalised proposal densities q_s,

    Z_s = E_{q_s}[ 1_s(x) exp(-u(x)) / q_s(x) ]

is an unbiased estimate of the stratum's partition function whatever the
proposal (a poor one only widens the error), and the strata's populations
follow as Z_s / sum Z. Draws of a stratum's proposal that land outside it
count as zero: every draw is in the denominator of the mean, so the
proposals need not stay inside their strata. The estimates are exact in
the sense of importance sampling (consistent as the draws grow; unbiased
for each Z_s); their error bars are delta-method standard errors, to be
trusted only with a healthy ESS inside each stratum.
"""
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StratumEstimate:
    """log Z of one stratum (Z in the units of the draws' exp(-u) / q) from one proposal's draws.

    Attributes
    ----------
    log_z : float
        log of the mean of 1_s(x) exp(-u(x)) / q(x) over all draws (-inf with no draw inside).
    log_z_error : float
        Delta-method standard error of ``log_z`` (nats): sd of the terms over their mean, / sqrt(draws).
    ess : float
        Kish effective sample size of the draws inside the stratum.
    draws_inside : int
    draws : int
    """

    log_z: float
    log_z_error: float
    ess: float
    draws_inside: int
    draws: int


def stratum_log_partition_function(log_weights, inside):
    """The ``StratumEstimate`` of a stratum from one proposal's draws.

    Parameters
    ----------
    log_weights : array_like, (n,)
        log w = -u(x) - log q(x) of every draw of the proposal, q its exact normalised density
        (-inf or NaN: weight 0, e.g. outside the proposal's support); all n draws count.
    inside : array_like of bool, (n,)
        Whether each draw lies in the stratum.
    """
    from scipy.special import logsumexp

    log_weights = np.asarray(log_weights, dtype=float)
    inside = np.asarray(inside, dtype=bool)
    if log_weights.shape != inside.shape or log_weights.ndim != 1 or len(log_weights) == 0:
        raise ValueError("log_weights and inside must be 1-D arrays of the same, nonzero length")
    terms = np.where(inside & np.isfinite(log_weights), log_weights, -np.inf)
    n = len(terms)
    if not np.isfinite(terms).any():
        return StratumEstimate(float("-inf"), float("nan"), 0.0, int(inside.sum()), n)
    log_z = float(logsumexp(terms) - np.log(n))
    ratio = np.exp(terms - log_z)  # each term over the mean: the error of log Z is their sd / sqrt(n)
    ess = float(ratio.sum() ** 2 / np.sum(ratio**2))
    return StratumEstimate(log_z, float(np.std(ratio) / np.sqrt(n)), ess, int(inside.sum()), n)


def stratified_free_energy_difference_kt(stratum, reference):
    """dF = -ln(Z_stratum / Z_reference) in kT, and its error, from two independent ``StratumEstimate``s.

    With two strata that split the space (a basin and the rest) this is the
    basin's free energy -ln(p / (1 - p)) of ``timeseries.population_free_energy_kt``.
    """
    if not (np.isfinite(stratum.log_z) and np.isfinite(reference.log_z)):
        return float("nan"), float("nan")
    return float(reference.log_z - stratum.log_z), float(np.hypot(stratum.log_z_error, reference.log_z_error))
