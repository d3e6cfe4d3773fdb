"""Monte Carlo moves (openmmtools ``MCMCMove`` subclasses) and their exact rules.

``proposal`` is the multiple-try Metropolis-Hastings move with exact model
densities (DESIGN.md section 2); ``mixture`` makes one proposal model out
of its conditionals at several temperatures, with the exact mixture
density; ``mapped_exchange`` swaps two states' configurations through the
model's flow map between their temperatures (exact, with the map's
Jacobian); ``streaming`` is the Langevin move that streams frames to the
learner; ``held_solvent`` moves a solute with every other atom held. May import ``openmm_ddpm.model``, ``coordinates`` and ``units``;
never the samplers or the application.
"""
from openmm_ddpm.moves.held_solvent import HeldSolventModel
from openmm_ddpm.moves.mapped_exchange import ExchangeOutcome, MappedExchange
from openmm_ddpm.moves.mixture import TemperatureMixture
from openmm_ddpm.moves.proposal import (
           GenerativeProposal,
           ProposalStatistics,
           reduced_potentials,
)
from openmm_ddpm.moves.streaming import StreamingLangevinMove

__all__ = ["ExchangeOutcome", "GenerativeProposal", "HeldSolventModel", "MappedExchange", "ProposalStatistics", "StreamingLangevinMove", "TemperatureMixture",
           "reduced_potentials"]
