"""Proposals from a mixture of the model's conditionals at several temperatures.

For a target at temperature T, ``TemperatureMixture`` proposes from

    q_mix(x | T) = sum_k c_k q(x | s_k T),

with fixed factors s_k (e.g. 1 and 1.25) and weights c_k. A hotter
conditional puts more mass in rare basins, and where the model learned a
basin only from hotter replicas (at the lowest temperature none was ever
streamed) it is the only component that proposes it well. The move stays
exact because every candidate and the current state are scored with the
mixture's own density, the same function for both: log q_mix is the
log-sum-exp of the model's exact ``log_prob`` at each s_k T. A component
draw outside the model's domain is an invalid candidate (weight 0), as for
a single model; every component has the same domain, so the valid part of
the mixture has exactly the density above (docs/exactness.md, section
"Temperature mixtures"). The price: one encoding per component and point,
instead of one.
"""
import numpy as np
import torch
from openmm import unit
from scipy.special import logsumexp

from openmm_ddpm.model.proposal_model import DiffusionProposalModel
from openmm_ddpm.model.protocol import draw_candidates, relabel
from openmm_ddpm.units import temperature_kelvin


class TemperatureMixture:
    """A proposal model: the wrapped model's conditionals mixed over scaled temperatures.

    Parameters
    ----------
    model : object
        Implements ``sample``/``log_prob`` of the ``GenerativeProposal``
        protocol with exact densities (e.g. ``DiffusionProposalModel``);
        ``draw(n, temperature, generator, reference_positions) ->
        (positions, valid)`` is used when present (no wasted scoring).
    temperature_factors : sequence of float
        s_k > 0: component k is the model at s_k T.
    weights : sequence of float, optional
        c_k > 0 (normalized here); equal by default.
    """

    def __init__(self, model, temperature_factors, weights=None):
        factors = np.asarray(temperature_factors, dtype=float)
        weights = np.ones(len(factors)) if weights is None else np.asarray(weights, dtype=float)
        if factors.ndim != 1 or len(factors) == 0 or not np.all(factors > 0):
            raise ValueError(f"temperature_factors must be a non-empty sequence of positive numbers, got {temperature_factors}")
        if weights.shape != factors.shape or not np.all(weights > 0):
            raise ValueError(f"need one positive weight per temperature factor, got {weights} for {factors}")
        self.model = model
        self.temperature_factors = factors
        self.log_weights = np.log(weights / weights.sum())

    def component_temperatures(self, temperature):
        """The temperatures s_k T of the components, as Quantities."""
        kelvin = temperature_kelvin(temperature)
        return [float(s) * kelvin * unit.kelvin for s in self.temperature_factors]

    def sample(self, n, temperature, generator=None, reference_positions=None):
        """n candidates from the mixture with their exact log q_mix (NaN: invalid draw).

        Returns
        -------
        positions : numpy.ndarray, (n, N, 3), nm
        log_q : numpy.ndarray, (n,)
        """
        positions, valid = self._draw(n, temperature, generator, reference_positions)
        log_q = np.full(n, np.nan)
        if valid.any():
            log_q[valid] = self.log_prob(positions[valid], temperature)
        return positions, log_q

    def sample_and_score(self, n, temperature, current_positions, generator=None):
        """Candidates, their log q_mix, and the current state's, encoded in one batch per component."""
        candidates, valid = self._draw(n, temperature, generator, current_positions)
        current = np.asarray(current_positions, dtype=np.float64)[None]
        chosen = np.concatenate([current, candidates[valid]])
        log_q = self.log_prob(chosen, temperature)
        log_q_candidates = np.full(n, np.nan)
        log_q_candidates[valid] = log_q[1:]
        return candidates, log_q_candidates, float(log_q[0])

    def log_prob(self, positions, temperature):
        """log q_mix = logsumexp_k (log c_k + log q(x | s_k T)); NaN outside the support.

        Parameters
        ----------
        positions : array_like, (n, N, 3), nm
        temperature : openmm.unit.Quantity

        Returns
        -------
        numpy.ndarray, (n,)
        """
        components = np.stack([self.model.log_prob(positions, t) for t in self.component_temperatures(temperature)])
        return mixture_log_density(components, self.log_weights)

    def relabel(self, positions, rng):
        """The wrapped model's relabelling of symmetric atom groups (identity without one)."""
        return relabel(self.model, positions, rng)

    def _draw(self, n, temperature, generator, reference_positions):
        """Positions from randomly chosen components, and which draws are valid."""
        component = torch.multinomial(torch.as_tensor(np.exp(self.log_weights)), n, replacement=True,
                                      generator=generator).numpy()
        positions, valid = None, np.zeros(n, dtype=bool)
        for k, t in enumerate(self.component_temperatures(temperature)):
            rows = np.flatnonzero(component == k)
            if len(rows) == 0:
                continue
            drawn, valid[rows] = self._draw_component(len(rows), t, generator, reference_positions)
            if positions is None:
                positions = np.empty((n,) + drawn.shape[1:])
            positions[rows] = drawn
        return positions, valid

    def _draw_component(self, n, temperature, generator, reference_positions):
        if isinstance(self.model, DiffusionProposalModel):  # positions without their densities: cheaper
            return self.model.draw(n, temperature, generator=generator, reference_positions=reference_positions)
        positions, log_q = draw_candidates(self.model, n, temperature, generator, reference_positions)
        return positions, np.isfinite(log_q)


def mixture_log_density(component_log_q, log_weights):
    """log sum_k c_k q_k per point, from each component's log q; NaN where no component has support.

    Parameters
    ----------
    component_log_q : array_like, (K, n)
        log q_k of n points under K components (NaN or -inf: outside that component's support).
    log_weights : array_like, (K,)
        log c_k, normalized.

    Returns
    -------
    numpy.ndarray, (n,)
    """
    terms = np.asarray(log_weights, dtype=np.float64)[:, None] + np.asarray(component_log_q, dtype=np.float64)
    terms = np.where(np.isfinite(terms), terms, -np.inf)
    total = np.full(terms.shape[1], np.nan)
    supported = np.isfinite(terms).any(axis=0)
    total[supported] = logsumexp(terms[:, supported], axis=0)
    return total
