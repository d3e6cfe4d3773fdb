"""Exact generative proposals: independent multiple-try Metropolis (K = 1: independence MH).

With current x and K candidates y_1..y_K drawn independently from q, every
point gets the weight w(.) = exp(-u(.) - log q(.)), u the reduced potential
of the thermodynamic state. One candidate y_j is selected with probability
w(y_j) / S, S = sum_k w(y_k), and accepted with probability
min(1, S / (S - w(y_j) + w(x))) (multiple-try Metropolis with independent
proposals, the other candidates serving as the reference points; Liu, Liang
& Wong 2000, Martino 2018). K = 1 is independence Metropolis-Hastings,
min(1, w(y) / w(x)). The move leaves pi(x) ~ exp(-u(x)) invariant for any q
whose support covers pi's (docs/exactness.md). It moves more often than
i-SIR (drawing from {x, y_1..y_K} in proportion to w, DESIGN.md section 2)
for every set of weights, so it is never worse in the Peskun order.

Points outside the proposal's support (log q NaN: outside the representation's
domain, or not encodable) and points with a non-finite energy get weight 0.
If the *current* state is outside the support the move does nothing, which
keeps pi invariant because candidates outside the support never enter either
(see docs/exactness.md).
"""
from dataclasses import asdict, dataclass

import numpy as np
import torch
from openmm import unit
from openmmtools import cache, mcmc

from openmm_ddpm.coordinates.constraints import ConstraintMetric, constraint_problem, system_constraints
from openmm_ddpm.model.protocol import RelabellingModel, draw_and_score, relabel
from openmm_ddpm.moves.multiple_try import (
    MoveOutcome,
    effective_sample_size,
    multiple_try_select,
    transition_probabilities,
)


@dataclass
class ProposalStatistics:
    """Counters of a GenerativeProposal.

    Attributes
    ----------
    n_moves : int
        Calls of ``apply``.
    n_candidates : int
        Candidates drawn.
    n_accepted : int
        Moves that replaced the state by a candidate.
    n_invalid_candidates : int
        Candidates with weight 0 (outside the support, or non-finite energy).
    n_current_outside_support : int
        Moves skipped because the current state was outside the support.
    sum_ess_fraction : float
        Sum over moves of ESS / (K + 1) of the move's weights.
    """

    n_moves: int = 0
    n_candidates: int = 0
    n_accepted: int = 0
    n_invalid_candidates: int = 0
    n_current_outside_support: int = 0
    sum_ess_fraction: float = 0.0

    @property
    def acceptance_rate(self):
        """Fraction of moves that changed the state."""
        return self.n_accepted / self.n_moves if self.n_moves else float("nan")

    @property
    def mean_ess_fraction(self):
        """Mean over moves of ESS / (K + 1)."""
        return self.sum_ess_fraction / self.n_moves if self.n_moves else float("nan")

    @property
    def invalid_fraction(self):
        """Fraction of candidates that got weight 0."""
        return self.n_invalid_candidates / self.n_candidates if self.n_candidates else float("nan")


def unsupported_reason(system, moved_atoms=None):
    """Why proposals cannot be exact on this System (one line that names the fix), or None if they can.

    Bond constraints are handled exactly when every one is a bond of the
    internal coordinates (``coordinates.constraints``); ring or angle
    constraints, virtual sites and periodic Systems are not (yet). With
    ``moved_atoms`` (a solute moved with the rest held, ``HeldSolventModel``)
    only what touches those atoms counts, and periodic Systems are fine.
    """
    atoms = range(system.getNumParticles()) if moved_atoms is None else [int(a) for a in moved_atoms]
    if any(system.isVirtualSite(i) for i in atoms):
        return "the moved atoms include virtual sites (their positions are not free); build the System without them"
    if moved_atoms is None and system.usesPeriodicBoundaryConditions():
        return ("the System is periodic: the representation has no periodic images, and proposals for a whole "
                "solvated System are not exact; use implicit solvent or vacuum, or move the solute with the solvent "
                "held (moves.HeldSolventModel)")
    return constraint_problem(system, moved_atoms)


def check_system_supported(system, moved_atoms=None):
    """Refuse a System on which proposals cannot be exact (``unsupported_reason``) with a ValueError."""
    reason = unsupported_reason(system, moved_atoms)
    if reason is not None:
        raise ValueError(f"GenerativeProposal refuses this System: {reason}")


def redraw_constrained_velocities(thermodynamic_state, sampler_state, context_cache, rng):
    """New velocities for new positions of a constrained System: Maxwell-Boltzmann on the tangent space.

    Constrained velocities lie in the tangent space of the constraint
    manifold at the positions, so old velocities do not fit new positions.
    Drawing v ~ N(0, kT M^-1) and projecting it M-orthogonally onto the
    tangent space (``ConstraintMetric.project_velocities``: solved exactly,
    where OpenMM's iterative velocity constraints can stop ~1e-2 short
    near collinear bonds) gives exactly the conditional Maxwell-Boltzmann
    distribution of v given x: a Gibbs step on v | x that keeps the joint
    distribution (docs/exactness.md, "Bond constraints"). Systems without
    constraints keep their velocities (there v is independent of x).

    Parameters
    ----------
    thermodynamic_state : openmmtools.states.ThermodynamicState
    sampler_state : openmmtools.states.SamplerState
        Its positions are the new ones; its velocities are replaced.
    context_cache : openmmtools.cache.ContextCache
        Where the System is read from (no copy).
    rng : numpy.random.Generator
    """
    context, _ = context_cache.get_context(thermodynamic_state)
    system = context.getSystem()
    if system.getNumConstraints() == 0:
        return
    masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system.getNumParticles())])
    kt = (unit.MOLAR_GAS_CONSTANT_R * thermodynamic_state.temperature).value_in_unit(unit.kilojoule_per_mole)
    inverse_masses = np.divide(1.0, masses, out=np.zeros_like(masses), where=masses > 0)  # massless sites: v = 0
    velocities = rng.standard_normal((len(masses), 3)) * np.sqrt(kt * inverse_masses)[:, None]  # nm/ps
    metric = ConstraintMetric([(a, b) for a, b, _ in system_constraints(system)], masses)
    positions = sampler_state.positions.value_in_unit(unit.nanometer)
    sampler_state.velocities = unit.Quantity(metric.project_velocities(positions, velocities, inverse_masses),
                                             unit.nanometer / unit.picosecond)


class GenerativeProposal(mcmc.MCMCMove):
    """Exact independence proposals from a generative model (multiple-try Metropolis, K candidates).

    Parameters
    ----------
    model : openmm_ddpm.model.ProposalModel
        ``sample`` and ``log_prob`` over the coordinates of the reduced
        potential (``openmm_ddpm.model.protocol``). A model that is also a
        ``FusedProposalModel`` draws and scores in one pass; a
        ``RelabellingModel`` relabels the current state's equivalent atoms
        first (``openmm_ddpm.coordinates.symmetry``).
    n_candidates : int
        K; 1 is independence Metropolis-Hastings.
    random_state : int, numpy.random.Generator or None
        Source of all randomness of the move (candidate draws and selection).
    condition : openmm.unit.Quantity, optional
        What the model is conditioned on (K); default: the thermodynamic state's temperature. A ladder of states
        at one temperature conditions on each state's place in it (``multistate.conditioning``). The weights use
        the state's own reduced potential either way, so the move is exact for any condition.
    """

    def __init__(self, model, n_candidates=1, random_state=None, condition=None):
        super().__init__()
        self.condition = condition
        if int(n_candidates) < 1:
            raise ValueError(f"n_candidates must be >= 1, got {n_candidates}")
        self.model = model
        self.n_candidates = int(n_candidates)
        self.rng = random_state if isinstance(random_state, np.random.Generator) else np.random.default_rng(random_state)
        self.torch_generator = torch.Generator().manual_seed(int(self.rng.integers(2**62)))
        self.statistics = ProposalStatistics()
        self.last_outcome = None

    def apply(self, thermodynamic_state, sampler_state, context_cache=None):
        """Apply one multiple-try move in place on ``sampler_state``.

        Parameters
        ----------
        thermodynamic_state : openmmtools.states.ThermodynamicState
        sampler_state : openmmtools.states.SamplerState
        context_cache : openmmtools.cache.ContextCache, optional
            Default: the global context cache.
        """
        check_system_supported(thermodynamic_state.system, getattr(self.model, "moved_atoms", None))
        temperature = thermodynamic_state.temperature if self.condition is None else self.condition
        current = relabel_in_place(self.model, sampler_state, self.rng)
        candidates, log_q_candidates, log_q_current = draw_and_score(
            self.model, self.n_candidates, temperature, current, generator=self.torch_generator)
        self.statistics.n_moves += 1
        self.statistics.n_candidates += self.n_candidates
        if not np.isfinite(log_q_current):
            self.statistics.n_current_outside_support += 1
            self.last_outcome = MoveOutcome(0, np.array([np.nan]), float("nan"), current[None], np.array([1.0]))
            return
        configurations = np.concatenate([current[None], np.asarray(candidates, dtype=np.float64)])
        reduced = reduced_potentials(thermodynamic_state, sampler_state, configurations, context_cache)
        log_weights = -reduced - np.concatenate([[log_q_current], log_q_candidates])
        log_weights[1:][~np.isfinite(log_weights[1:])] = -np.inf
        if not np.isfinite(log_weights[0]):
            raise RuntimeError(f"the current state's reduced potential is not finite ({reduced[0]})")
        chosen = multiple_try_select(log_weights, self.rng)
        ess_fraction = effective_sample_size(log_weights) / len(log_weights)
        self.statistics.n_invalid_candidates += int(np.sum(~np.isfinite(log_weights[1:])))
        self.statistics.sum_ess_fraction += ess_fraction
        if chosen > 0:
            self.statistics.n_accepted += 1
            sampler_state.positions = unit.Quantity(configurations[chosen], unit.nanometer)
            redraw_constrained_velocities(thermodynamic_state, sampler_state, cache_or_global(context_cache), self.rng)
        self.last_outcome = MoveOutcome(chosen, log_weights, ess_fraction, configurations,
                                        transition_probabilities(log_weights))

    def reset_statistics(self):
        """Zero the counters."""
        self.statistics = ProposalStatistics()

    def __getstate__(self):
        return {"n_candidates": self.n_candidates, "statistics": asdict(self.statistics)}

    def __setstate__(self, serialization):
        raise NotImplementedError(
            "a GenerativeProposal is restored by openmm_ddpm's sampler from its model checkpoint"
        )


def relabel_in_place(model, sampler_state, rng):
    """The kernel R: a random valid relabelling of symmetric atom groups, written back; returns the positions (N, 3) nm.

    Models without relabelling (not a ``RelabellingModel``) leave the state as it is.
    """
    current = np.asarray(sampler_state.positions.value_in_unit(unit.nanometer), dtype=np.float64)
    if isinstance(model, RelabellingModel):
        current = relabel(model, current[None], rng)[0]
        sampler_state.positions = unit.Quantity(current, unit.nanometer)
    return current


def reduced_potentials(thermodynamic_state, sampler_state, configurations, context_cache=None):
    """Reduced potentials u = beta (U + pV) of configurations, from OpenMM.

    Parameters
    ----------
    thermodynamic_state : openmmtools.states.ThermodynamicState
    sampler_state : openmmtools.states.SamplerState
        Its box vectors are used; it is re-applied to the Context afterwards.
    configurations : numpy.ndarray, (n, N, 3), nm
    context_cache : openmmtools.cache.ContextCache, optional

    Returns
    -------
    numpy.ndarray, (n,)
        NaN-free: non-finite energies are returned as +inf.
    """
    context, _ = cache_or_global(context_cache).get_context(thermodynamic_state)
    reduced = np.empty(len(configurations))
    for i, positions in enumerate(configurations):
        if not np.all(np.isfinite(positions)):
            reduced[i] = np.inf
            continue
        context.setPositions(positions)
        value = thermodynamic_state.reduced_potential(context)
        reduced[i] = value if np.isfinite(value) else np.inf
    sampler_state.apply_to_context(context, ignore_velocities=True)
    return reduced


def cache_or_global(context_cache):
    """The given openmmtools ContextCache, or the global one for None."""
    return cache.global_context_cache if context_cache is None else context_cache
