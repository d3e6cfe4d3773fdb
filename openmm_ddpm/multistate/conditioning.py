"""What the model is conditioned on: one positive scalar per thermodynamic state, in kelvin.

The network takes one conditioning value c, entered as log2(c / 300 K)
(``model.networks``). On a temperature ladder c is the state's temperature,
so a never-simulated temperature is one more input. On a ladder of states
at one temperature that differ in anything else (alchemical lambdas, a
pressure, a restraint, another System of the same atoms), c is the state's
place in the ladder, c_k = T * 2**(k / (K - 1)) for state k of K: the model
learns p(x | state k) as it learns p(x | T). Exactness does not depend on
the choice: a proposal for state k is accepted or rejected with state k's
own reduced potential (``moves.GenerativeProposal``), whatever the model
was conditioned on. A ladder whose states differ in temperature and in
something else has no single scalar here; such a run is plain replica
exchange (``support``).
"""
from dataclasses import dataclass

from openmm import unit
from openmmtools import states

TEMPERATURE = "temperature"
LADDER_POSITION = "ladder position"


@dataclass(frozen=True)
class StateConditioning:
    """The conditioning value of every state.

    Attributes
    ----------
    kind : str
        ``"temperature"`` or ``"ladder position"``.
    kelvin : tuple of float
        c_k per state (K).
    """

    kind: str
    kelvin: tuple

    def of(self, state_index):
        """c of a state as an openmm.unit.Quantity (K): what the model's ``temperature`` argument takes."""
        return self.kelvin[int(state_index)] * unit.kelvin


def state_conditioning(thermodynamic_states):
    """The ``StateConditioning`` of a ladder, or a one-line reason why it has none (str).

    Parameters
    ----------
    thermodynamic_states : list of openmmtools.states.ThermodynamicState
        Compound states (alchemical, restraint) included.
    """
    kelvins = [state.temperature.value_in_unit(unit.kelvin) for state in thermodynamic_states]
    reference = thermodynamic_states[0]
    if all(_differs_only_in_temperature(reference, state) for state in thermodynamic_states):
        return StateConditioning(TEMPERATURE, tuple(kelvins))
    if any(abs(kelvin - kelvins[0]) > 1e-9 for kelvin in kelvins):
        return ("the states differ in temperature and in more than temperature, and the model is conditioned on one "
                "scalar per state; for proposals, vary either the temperature or the other parameters")
    n_atoms = {state.system.getNumParticles() for state in thermodynamic_states}
    if len(n_atoms) > 1:
        return "the states' Systems have different numbers of atoms; for proposals, give every state the same atoms"
    last = max(len(kelvins) - 1, 1)
    return StateConditioning(LADDER_POSITION, tuple(kelvins[0] * 2.0 ** (k / last) for k in range(len(kelvins))))


def _differs_only_in_temperature(reference, state):
    return (type(state) is states.ThermodynamicState and reference.is_state_compatible(state)
            and state.pressure == reference.pressure)


__all__ = ["StateConditioning", "state_conditioning", "TEMPERATURE", "LADDER_POSITION"]
