"""The multiple-try Metropolis rule with independent proposals, on log-weights alone.

From the current state (weight w_0) and K candidates (w_1..w_K, S their
total), candidate j is selected with probability w_j / S and accepted with
probability min(1, S / (S - w_j + w_0)) (Liu, Liang & Wong 2000; Martino
2018): ``multiple_try_select`` draws it, ``transition_probabilities`` gives
the probability of every point becoming the next state (for waste
recycling, ``MoveOutcome.recycled``), ``effective_sample_size`` the Kish ESS.
Nothing here knows about molecules or models: ``moves.proposal`` computes
the weights and applies the move.
"""
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MoveOutcome:
    """What one move did, and what it could have done.

    Attributes
    ----------
    chosen : int
        0 if the current state was kept, else 1 + index of the chosen candidate.
    log_weights : numpy.ndarray, (K + 1,)
        log w of current state (first) and candidates; -inf for weight 0.
    ess_fraction : float
    configurations : numpy.ndarray, (K + 1, N, 3), nm
        The current state (first, after relabelling) and the candidates.
    transition_probabilities : numpy.ndarray, (K + 1,)
        P(next state = point i | current state, candidates)
        (``transition_probabilities``); they sum to 1.
    """

    chosen: int
    log_weights: np.ndarray
    ess_fraction: float
    configurations: np.ndarray = None
    transition_probabilities: np.ndarray = None

    def recycled(self, values):
        """E[f(next state) | current state, candidates] = sum_i P_i f(z_i), from f of ``configurations``.

        Averaged over the moves of a chain in place of f of the accepted
        states, it estimates the same expectation (the two averages differ by
        a martingale: waste recycling, Frenkel 2004; Delmas & Jourdain 2009)
        with a variance no larger per move, and it uses every candidate.

        Parameters
        ----------
        values : array_like, (K + 1,)
            The observable at each of ``configurations``.
        """
        return float(np.dot(self.transition_probabilities, np.asarray(values, dtype=float)))


def effective_sample_size(log_weights):
    """Kish ESS (sum w)^2 / sum w^2 of unnormalized log-weights (-inf allowed)."""
    log_weights = np.asarray(log_weights, dtype=float)
    finite = np.isfinite(log_weights)
    if not finite.any():
        return 0.0
    w = np.exp(log_weights[finite] - log_weights[finite].max())
    return float(w.sum() ** 2 / (w**2).sum())


def multiple_try_select(log_weights, rng):
    """Independent multiple-try Metropolis: which point becomes the new state.

    Parameters
    ----------
    log_weights : array_like, (K + 1,)
        log w of the current state (entry 0, must be finite) and of the K
        candidates (-inf for weight 0).
    rng : numpy.random.Generator

    Returns
    -------
    int
        0 to keep the current state, else 1 + index of the accepted candidate.
        Candidate j is selected with probability w_j / S and accepted with
        probability min(1, S / (S - w_j + w_0)), S the candidates' total weight.
    """
    log_weights = np.asarray(log_weights, dtype=float)
    if not np.isfinite(log_weights[0]):
        raise ValueError("the current state's log-weight must be finite")
    candidates = log_weights[1:]
    valid = np.isfinite(candidates)
    if not valid.any():
        return 0
    top = candidates[valid].max()
    w = np.zeros(len(candidates))
    w[valid] = np.exp(candidates[valid] - top)  # the largest candidate weight is 1: no underflow of the sum
    j = int(rng.choice(len(w), p=w / w.sum()))
    with np.errstate(divide="ignore"):
        log_total = top + np.log(w.sum())
        log_reverse_total = np.logaddexp(top + np.log(np.delete(w, j).sum()), log_weights[0])
    return j + 1 if np.log(rng.random()) < log_total - log_reverse_total else 0


def transition_probabilities(log_weights):
    """Probability that each of the K + 1 points becomes the next state of a multiple-try move.

    Candidate j (entry j + 1) is selected with probability p_j = w_j / S and
    accepted with probability a_j = min(1, S / (S - w_j + w_0)), S the
    candidates' total weight (``multiple_try_select``); it becomes the next
    state with probability p_j a_j, and the current state (entry 0) stays
    with the rest, 1 - sum_j p_j a_j.

    Parameters
    ----------
    log_weights : array_like, (K + 1,)
        As ``multiple_try_select``.

    Returns
    -------
    numpy.ndarray, (K + 1,)
    """
    log_weights = np.asarray(log_weights, dtype=float)
    if not np.isfinite(log_weights[0]):
        raise ValueError("the current state's log-weight must be finite")
    probabilities = np.zeros(len(log_weights))
    candidates = log_weights[1:]
    valid = np.isfinite(candidates)
    if not valid.any():
        probabilities[0] = 1.0
        return probabilities
    top = candidates[valid].max()
    w = np.where(valid, np.exp(np.where(valid, candidates, top) - top), 0.0)
    total = w.sum()
    others = np.array([np.delete(w, j).sum() for j in range(len(w))])  # S - w_j, summed, not subtracted
    with np.errstate(over="ignore", divide="ignore"):  # w_0 = inf: acceptance 0; w_0 = 0 and one candidate: 1
        w0 = np.exp(log_weights[0] - top)
        acceptance = np.minimum(1.0, total / (others + w0))
    probabilities[1:] = w / total * acceptance
    probabilities[0] = max(0.0, 1.0 - probabilities[1:].sum())
    return probabilities
