"""Which runs get proposals: a drop-in sampler never refuses what its parent runs.

Where proposals cannot be exact (a periodic System, virtual sites,
constraints that are not bonds of the internal coordinates, states that
differ in more than temperature), the DDPM samplers run as plain
openmmtools replica exchange and say why, once, as a warning
(``plain_replica_exchange_reason``); where they can, nothing changes.
"""
import logging
import warnings

from openmmtools import states

from openmm_ddpm.moves.proposal import unsupported_reason

logger = logging.getLogger(__name__)


def plain_replica_exchange_reason(thermodynamic_states, settings, temperature_only=False):
    """Why this run cannot have proposals (one line that names the fix), or None if it can.

    Parameters
    ----------
    thermodynamic_states : list of openmmtools.states.ThermodynamicState
    settings : openmm_ddpm.settings.Settings
    temperature_only : bool
        Also require plain ThermodynamicStates of one System that differ only
        in temperature (the model is conditioned on temperature alone).
    """
    if temperature_only:
        reason = _beyond_temperature(thermodynamic_states)
        if reason is not None:
            return reason
    system = thermodynamic_states[0].system
    reason = unsupported_reason(system)
    if reason is None and system.getNumConstraints() > 0 and settings.representation.resolved_kind(system) == "cartesian":
        reason = ("the Cartesian representation cannot keep the System's constraints; use "
                  "representation=dict(kind='internal')")
    return reason


def _beyond_temperature(thermodynamic_states):
    reference = thermodynamic_states[0]
    for index, state in enumerate(thermodynamic_states):
        if type(state) is not states.ThermodynamicState:
            return (f"state {index} is a {type(state).__name__}, and the model is conditioned on temperature only; "
                    "for proposals, use plain ThermodynamicStates that differ only in temperature")
        if not reference.is_state_compatible(state) or state.pressure != reference.pressure:
            return (f"state {index} differs from state 0 in more than temperature, and the model is conditioned on "
                    "temperature only; for proposals, use one System and vary only the temperature")
    return None


def warn_plain_replica_exchange(reason):
    """The one warning of a run that goes on without proposals."""
    message = f"openmm_ddpm: no DDPM training or proposals in this run, it is plain replica exchange: {reason}"
    logger.warning(message)
    warnings.warn(message, stacklevel=3)
