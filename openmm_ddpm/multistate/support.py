"""Which runs get proposals: a drop-in sampler never refuses what its parent runs.

Where proposals cannot be exact (a periodic System, virtual sites,
constraints that are not bonds of the internal coordinates, states that
differ in temperature and in more than temperature at once), the DDPM samplers run as plain
openmmtools replica exchange and say why, once, as a warning
(``plain_replica_exchange_reason``); where they can, nothing changes.
"""
import logging
import warnings

from openmm_ddpm.coordinates.constraints import system_constraints
from openmm_ddpm.moves.proposal import unsupported_reason
from openmm_ddpm.multistate.conditioning import TEMPERATURE, state_conditioning

logger = logging.getLogger(__name__)


def plain_replica_exchange_reason(thermodynamic_states, settings, any_ladder=False):
    """Why this run cannot have proposals (one line that names the fix), or None if it can.

    Parameters
    ----------
    thermodynamic_states : list of openmmtools.states.ThermodynamicState
    settings : openmm_ddpm.settings.Settings
    any_ladder : bool
        The states may differ in more than temperature (``DDPMReplicaExchangeSampler``): require one
        conditioning scalar per state (``conditioning.state_conditioning``), the same constraints in
        every state's System, and no mapped exchanges (they map between temperatures).
    """
    if any_ladder:
        reason = _ladder_reason(thermodynamic_states, settings)
        if reason is not None:
            return reason
    system = thermodynamic_states[0].system
    reason = unsupported_reason(system)
    if reason is None and system.getNumConstraints() > 0 and settings.representation.resolved_kind(system) == "cartesian":
        reason = ("the Cartesian representation cannot keep the System's constraints; use "
                  "representation=dict(kind='internal')")
    return reason


def _ladder_reason(thermodynamic_states, settings):
    conditioning = state_conditioning(thermodynamic_states)
    if isinstance(conditioning, str):
        return conditioning
    if conditioning.kind == TEMPERATURE:
        return None
    if settings.proposals.exchange_pairs:
        return ("mapped exchanges (proposals.exchange_pairs) map between temperatures, and these states differ in "
                "more than temperature; leave exchange_pairs empty")
    constraints = [sorted(system_constraints(state.system)) for state in thermodynamic_states]
    if any(c != constraints[0] for c in constraints[1:]):
        return "the states' Systems constrain different bonds; for proposals, give every state the same constraints"
    return None


def warn_plain_replica_exchange(reason):
    """The one warning of a run that goes on without proposals."""
    message = f"openmm_ddpm: no DDPM training or proposals in this run, it is plain replica exchange: {reason}"
    logger.warning(message)
    warnings.warn(message, stacklevel=3)
