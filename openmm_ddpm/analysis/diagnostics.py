"""How good a proposal model is, measured without running a chain: acceptance, overfitting."""
import numpy as np


def log_weight_gap(learner, system, temperature, frames_before_freeze, n_frames=200, seed=0):
    """Mean log w at a temperature on training frames minus held-out frames (an overfitting check).

    Training frames: frames of that temperature that entered the buffer
    before the model froze; held out: frames streamed after the freeze,
    never trained on. log w = -u - log q with the proposal's own log-density
    (rotor multiplicity included), after the relabelling a move applies.
    A strongly positive gap means the model fits its training frames better
    than fresh ones.

    Parameters
    ----------
    learner : openmm_ddpm.multistate.OnlineLearner
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

    from openmm_ddpm.model.protocol import relabel
    from openmm_ddpm.moves.proposal import reduced_potentials

    positions, kelvins = learner.buffer.arrays()
    index = np.arange(len(positions)) - (len(positions) - learner.buffer.n_added)  # order of arrival
    at_temperature = np.isclose(kelvins, temperature.value_in_unit(unit.kelvin))
    model = learner.proposal_model
    rng = np.random.default_rng(seed)
    thermodynamic_state = states.ThermodynamicState(system, temperature)
    means, log_weights = {}, {}
    for name, mask in (("train", at_temperature & (index < frames_before_freeze)),
                       ("held_out", at_temperature & (index >= frames_before_freeze))):
        if not mask.any():
            means[name], log_weights[name] = float("nan"), np.array([])
            continue
        chosen = rng.choice(np.flatnonzero(mask), size=min(n_frames, int(mask.sum())), replace=False)
        frames = relabel(model, positions[chosen].astype(np.float64), rng)
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


def basin_ess(log_weights, basin):
    """Effective sample size and weight share of each basin's importance weights.

    A self-normalised estimate of a basin's population is only as good as
    the number of samples its weight rests on: with a handful of large
    weights in a basin, the delta-method error bar of
    ``reweighted_expectation`` is optimistic. This is the check for it.

    Parameters
    ----------
    log_weights : array_like, (n,)
        Unnormalized log-weights (-inf or NaN: weight 0).
    basin : array_like, (n,)
        Basin label of each sample (e.g. phi > 0 as bool, or an integer).

    Returns
    -------
    dict
        ``{label: (ess, weight_share, n_samples)}`` per basin present:
        the Kish ESS of the weights inside the basin, the basin's share of
        the total weight, and its number of samples.
    """
    from scipy.special import logsumexp

    log_weights = np.asarray(log_weights, dtype=float)
    basin = np.asarray(basin)
    finite = np.isfinite(log_weights)
    log_total = logsumexp(log_weights[finite]) if finite.any() else -np.inf
    result = {}
    for label in np.unique(basin):
        inside = log_weights[finite & (basin == label)]  # in logs: a rare basin's weights underflow when squared
        if len(inside):
            ess = float(np.exp(2.0 * logsumexp(inside) - logsumexp(2.0 * inside)))
            share = float(np.exp(logsumexp(inside) - log_total))
        else:
            ess, share = 0.0, (0.0 if finite.any() else float("nan"))
        result[label.item() if hasattr(label, "item") else label] = (ess, share, int(np.sum(basin == label)))
    return result
