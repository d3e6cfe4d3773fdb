"""The interface between a generative model and the exact proposal move, written down once.

A proposal model needs two methods (``ProposalModel``): ``sample`` draws
candidates with their exact log-density, ``log_prob`` scores any
configuration with the same function. Both densities are over the
coordinates of the reduced potential (positions in nm, the frame kept from
``reference_positions`` where the representation has one). Two optional
abilities make a move cheaper or exact on symmetric molecules:
``FusedProposalModel.sample_and_score`` (candidates and the current
state's log q in one pass) and ``RelabellingModel.relabel`` (the kernel R
that relabels equivalent atoms; ``coordinates.symmetry``).

The helpers here are the only place the move asks what a model can do, so
a model written to the older ``sample(n, temperature, generator=None)``
(no ``reference_positions``) still works. Imports nothing of the package.
"""
import inspect
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class ProposalModel(Protocol):
    """What ``GenerativeProposal`` draws from."""

    def sample(self, n, temperature, generator=None, reference_positions=None):
        """n candidates at ``temperature`` (openmm.unit.Quantity): positions (n, N, 3) nm and log q (n,).

        ``generator`` (torch.Generator) is the source of randomness;
        ``reference_positions`` (N, 3) nm, the configuration whose frame the
        candidates keep. A model may leave out either optional argument.
        NaN log q marks a candidate outside the model's support.
        """

    def log_prob(self, positions, temperature):
        """Exact log q (n,) of configurations (n, N, 3) nm at ``temperature``; NaN outside the support."""


@runtime_checkable
class FusedProposalModel(Protocol):
    """A model that scores the current state in the same pass as it draws candidates."""

    def sample_and_score(self, n, temperature, current_positions, generator=None):
        """(positions (n, N, 3) nm, log q (n,), log q of ``current_positions`` (float))."""


@runtime_checkable
class RelabellingModel(Protocol):
    """A model over a representation with equivalent atoms (rotors)."""

    def relabel(self, positions, rng):
        """A uniformly random valid relabelling of positions (n, N, 3) nm; ``rng``: numpy.random.Generator."""


def accepted_keywords(method, **keywords):
    """The subset of ``keywords`` that ``method`` accepts (all of them if it takes ``**kwargs``)."""
    parameters = inspect.signature(method).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return keywords
    return {name: value for name, value in keywords.items() if name in parameters}


def draw_candidates(model, n, temperature, generator=None, reference_positions=None, **extra):
    """``model.sample`` with the optional arguments the model takes: (positions float64 nm, log q)."""
    keywords = accepted_keywords(model.sample, generator=generator, reference_positions=reference_positions, **extra)
    positions, log_q = model.sample(n, temperature, **keywords)
    return np.asarray(positions, dtype=np.float64), np.asarray(log_q, dtype=np.float64)


def draw_and_score(model, n, temperature, current_positions, generator=None):
    """Candidates with log q, and the current state's log q, fused where the model can.

    Returns
    -------
    positions : numpy.ndarray, (n, N, 3), nm
    log_q : numpy.ndarray, (n,)
    log_q_current : float
    """
    if isinstance(model, FusedProposalModel):
        return model.sample_and_score(n, temperature, current_positions, generator=generator)
    positions, log_q = draw_candidates(model, n, temperature, generator, current_positions)
    return positions, log_q, float(model.log_prob(current_positions[None], temperature)[0])


def relabel(model, positions, rng):
    """The model's relabelling of equivalent atoms, or the positions unchanged (float64 nm)."""
    if isinstance(model, RelabellingModel):
        return np.asarray(model.relabel(positions, rng), dtype=np.float64)
    return np.asarray(positions, dtype=np.float64)
