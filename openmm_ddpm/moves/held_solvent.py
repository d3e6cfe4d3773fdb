"""Proposals for a solute with every other atom held: exact on the slice where the solvent stays put.

A model of the solute's atoms alone (trained on them, e.g. in vacuum or
implicit solvent, or on the solute coordinates of an explicit-solvent run)
proposes new solute coordinates; every other atom (water, ions, a receptor)
keeps its position. The move's target is the conditional
pi(solute | rest) ~ exp(-u(x)) at the current rest, its proposal density is
the model's density of the solute, and the weights exp(-u - log q) are
those of a whole-system move on that slice, so the move is exact, also for
periodic Systems and rigid water, which it never moves (docs/exactness.md,
"Held solvent"). Whether it pays depends on how often a solute
configuration drawn without its solvent fits the solvent around it
(``benchmarks/held_solvent_move.py``).
"""
import numpy as np

from openmm_ddpm.model.protocol import draw_and_score, relabel


class HeldSolventModel:
    """A solute model as a proposal model of the whole solvated System (the rest held).

    Parameters
    ----------
    model : ProposalModel
        Over the solute's atoms, in the order of ``solute_atoms``.
    solute_atoms : sequence of int
        The System's atoms the model moves; whole molecules.
    """

    def __init__(self, model, solute_atoms):
        self.model = model
        self.moved_atoms = np.asarray(solute_atoms, dtype=int)

    def sample_and_score(self, n, temperature, current_positions, generator=None):
        """Candidates (the rest held at ``current_positions``), their log q, and the current state's log q."""
        current = np.asarray(current_positions, dtype=np.float64)
        solute, log_q, log_q_current = draw_and_score(self.model, n, temperature, current[self.moved_atoms], generator)
        return self._placed(current, solute), log_q, log_q_current

    def sample(self, n, temperature, generator=None, reference_positions=None):
        candidates, log_q, _ = self.sample_and_score(n, temperature, reference_positions, generator)
        return candidates, log_q

    def log_prob(self, positions, temperature):
        """The model's log q of the solute's coordinates (n,)."""
        return np.asarray(self.model.log_prob(np.asarray(positions)[:, self.moved_atoms], temperature), dtype=float)

    def relabel(self, positions, rng):
        """The solute model's relabelling of equivalent atoms; the rest unchanged."""
        positions = np.array(positions, dtype=np.float64)
        positions[:, self.moved_atoms] = relabel(self.model, positions[:, self.moved_atoms], rng)
        return positions

    def _placed(self, current, solute):
        placed = np.repeat(current[None], len(solute), axis=0)
        placed[:, self.moved_atoms] = solute
        return placed
