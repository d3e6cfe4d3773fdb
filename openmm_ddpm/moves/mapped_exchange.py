"""Replica exchange through the model's flow map: an exact swap between distant temperatures.

A plain swap between states i and j exchanges the configurations as they
are, and between 300 K and 1000 K it is essentially never accepted. The
mapped exchange sends each configuration through the model's flow map
between the two temperatures, M_ij = Phi_j o Phi_i^-1 on the model's
features (``DiffusionProposalModel.map_temperature``): with x at T_i and y
at T_j, state i is offered a = M_ji(y) and state j is offered b = M_ij(x),
each in the frame its state had (the frame and the features are separate
coordinates; the map acts on the features). Because the maps are inverse
to each other the move is an involution, and since
|det dM_ij / dx| = q(x | T_i) / q(M_ij x | T_j) it is accepted with

    min(1, w_i(a) w_j(b) / (w_i(x) w_j(y))),   w_T = exp(-u_T - log q(. | T)),

the Metropolis rule of a deterministic involution (Tierney 1998; learned
replica exchange, Invernizzi et al. 2022, and Boltzmann-generator swaps).
The model's errors that change slowly with temperature cancel in the
ratio, so it can be accepted where the model's own importance weights are
poor. Velocities stay with their states (they are independent of the
positions in every state's target). Symmetric atom groups are relabelled
first, as for ``GenerativeProposal``. An image outside the model's domain,
a state outside its support or a non-finite energy means the move does
nothing (docs/exactness.md, "Mapped replica exchange").
"""
from dataclasses import dataclass

import numpy as np
from openmm import unit

from openmm_ddpm.moves.proposal import (
    cache_or_global,
    check_system_supported,
    redraw_constrained_velocities,
    reduced_potentials,
    relabel_in_place,
)


@dataclass(frozen=True)
class ExchangeOutcome:
    """What one mapped exchange did.

    Attributes
    ----------
    states : tuple of int
        (i, j), the indices the caller gave.
    log_acceptance : float
        log of the acceptance ratio (NaN: invalid, the move did nothing).
    accepted : bool
    offered : numpy.ndarray, (2, N, 3), nm
        a = M_ji(y) offered to state i and b = M_ij(x) offered to state j (NaN where invalid).
    """

    states: tuple
    log_acceptance: float
    accepted: bool
    offered: np.ndarray

    @property
    def acceptance_probability(self):
        """min(1, ratio); 0 for an invalid move."""
        return float(np.exp(min(self.log_acceptance, 0.0))) if np.isfinite(self.log_acceptance) else 0.0


class MappedExchange:
    """Exact replica exchange of two states' configurations through a model's temperature map.

    Parameters
    ----------
    model : object
        ``map_temperature(positions, from_temperature, to_temperature, reference_positions)``
        -> (mapped, valid, log q at from) and ``log_prob(positions, temperature)``
        with the same density (e.g. ``DiffusionProposalModel``); ``relabel`` is used when present.
    random_state : int, numpy.random.Generator or None
        Source of the acceptance draws and relabellings.
    """

    def __init__(self, model, random_state=None):
        self.model = model
        self.rng = random_state if isinstance(random_state, np.random.Generator) else np.random.default_rng(random_state)
        self.n_attempts = 0
        self.n_accepted = 0
        self.last_outcome = None

    def apply(self, thermodynamic_states, sampler_states, context_cache=None, states=(0, 1)):
        """One mapped exchange between two states, in place on their sampler states.

        Parameters
        ----------
        thermodynamic_states : pair of openmmtools.states.ThermodynamicState
            States i and j (any two temperatures of the same System).
        sampler_states : pair of openmmtools.states.SamplerState
            The configurations currently at i and j.
        context_cache : openmmtools.cache.ContextCache, optional
        states : tuple of int
            Labels recorded in the outcome.

        Returns
        -------
        ExchangeOutcome
        """
        for thermodynamic_state in thermodynamic_states:
            check_system_supported(thermodynamic_state.system)
        x, y = (relabel_in_place(self.model, sampler_state, self.rng) for sampler_state in sampler_states)
        (t_i, t_j) = (state.temperature for state in thermodynamic_states)
        a, valid_a, log_q_y = self.model.map_temperature(y[None], t_j, t_i, reference_positions=x)
        b, valid_b, log_q_x = self.model.map_temperature(x[None], t_i, t_j, reference_positions=y)
        self.n_attempts += 1
        log_alpha = float("nan")
        if valid_a[0] and valid_b[0]:
            log_alpha = self._log_acceptance(thermodynamic_states, sampler_states, context_cache,
                                             (x, a[0], y, b[0]), (log_q_x[0], log_q_y[0]))
        accepted = bool(np.isfinite(log_alpha) and np.log(self.rng.uniform()) < log_alpha)
        if accepted:
            self.n_accepted += 1
            sampler_states[0].positions = unit.Quantity(a[0], unit.nanometer)
            sampler_states[1].positions = unit.Quantity(b[0], unit.nanometer)
            for thermodynamic_state, sampler_state in zip(thermodynamic_states, sampler_states):
                redraw_constrained_velocities(thermodynamic_state, sampler_state, cache_or_global(context_cache), self.rng)
        self.last_outcome = ExchangeOutcome(tuple(states), log_alpha, accepted, np.stack([a[0], b[0]]))
        return self.last_outcome

    def _log_acceptance(self, thermodynamic_states, sampler_states, context_cache, points, log_q_currents):
        """log w_i(a) + log w_j(b) - log w_i(x) - log w_j(y) (NaN if any term is not finite)."""
        x, a, y, b = points
        log_q_x, log_q_y = log_q_currents
        (state_i, state_j), (sampler_i, sampler_j) = thermodynamic_states, sampler_states
        u_x, u_a = reduced_potentials(state_i, sampler_i, np.stack([x, a]), context_cache)
        u_y, u_b = reduced_potentials(state_j, sampler_j, np.stack([y, b]), context_cache)
        log_q_a = self.model.log_prob(a[None], state_i.temperature)[0]
        log_q_b = self.model.log_prob(b[None], state_j.temperature)[0]
        value = (-u_a - log_q_a) + (-u_b - log_q_b) - (-u_x - log_q_x) - (-u_y - log_q_y)
        return float(value) if np.isfinite(value) else float("nan")

    @property
    def acceptance_rate(self):
        """Fraction of attempts that exchanged."""
        return self.n_accepted / self.n_attempts if self.n_attempts else float("nan")
