"""OpenMM's own replica-exchange sampler (``openmm.app.ReplicaExchangeSampler``) with online diffusion proposals.

For plain OpenMM scripts: the same online learning and exact proposals as
the openmmtools samplers, hooked into the two methods OpenMM documents for
overriding.

- ``simulateReplica`` runs a replica's MD in pieces of ``stream_stride``
  steps and streams a frame after each (with ``stream_when_frozen=False``
  in one piece once the model is frozen); a replica at a target state then
  gets one exact ``GenerativeProposal`` move every ``propose_interval``
  iterations. OpenMM computes the replica's energies in every state right
  after ``simulateReplica`` returns, from the Context, so its exchanges see
  the configuration the move left.
- ``exchangeReplicas`` exchanges as OpenMM does, then trains
  (``OnlineLearner.train_for_iteration``: the same schedule and freeze as
  the openmmtools samplers).

From ``freeze_after`` on the model is frozen for good, every replica's
kernel is MD, then possibly an exact MH move that leaves its state's
Boltzmann distribution invariant, and OpenMM's exchanges keep the product
of them: the run is exact (docs/exactness.md). States may be
temperature-only dicts ``{'temperature': T}``, or dicts of the System's
global parameters at one temperature (a Hamiltonian ladder: the model is
then conditioned on each state's place in it, ``conditioning``, and each
proposal weighed with its state's energy); ladders that vary both, force
groups, and Systems proposals cannot keep exactly run as plain OpenMM
replica exchange with one warning. Mapped exchanges are not wired in here
(use ``DDPMParallelTemperingSampler``).
"""
import time
from dataclasses import dataclass

import numpy as np
from openmm import app, unit
from openmmtools import states as openmmtools_states

from openmm_ddpm.multistate.checkpoints import load_verified, save_atomic
from openmm_ddpm.multistate.conditioning import state_conditioning
from openmm_ddpm.multistate.contexts import EnergyContextCache
from openmm_ddpm.multistate.learner import PHASE_PRODUCTION, OnlineLearner, phase_of
from openmm_ddpm.multistate.support import plain_replica_exchange_reason, warn_plain_replica_exchange
from openmm_ddpm.settings import Settings


@dataclass(frozen=True)
class IterationStatistics:
    """What the learning and the proposals did in one iteration.

    Attributes
    ----------
    iteration : int
    phase : int
        0 adaptive, 1 production (model frozen).
    training_loss : float
        NaN where no training round ran.
    n_candidates, n_accepted : int
        Candidates drawn and moves accepted by the proposals of this iteration.
    buffer_frames : int
    training_seconds, proposal_seconds : float, s
    """

    iteration: int
    phase: int
    training_loss: float
    n_candidates: int
    n_accepted: int
    buffer_frames: int
    training_seconds: float
    proposal_seconds: float


class DDPMOpenMMReplicaExchangeSampler(app.ReplicaExchangeSampler):
    """``openmm.app.ReplicaExchangeSampler`` with online diffusion training and exact generative proposals.

    Parameters
    ----------
    states, simulation, stepsPerIteration, reinitializeVelocities
        As ``openmm.app.ReplicaExchangeSampler``; for proposals ``states`` are dicts
        ``{'temperature': T}`` (T a Quantity, or a number in K), or dicts of global parameters at one temperature.
    representation, model, training, proposals, dynamics : dataclass or dict, optional
        The settings groups (``openmm_ddpm.settings``). Of ``dynamics`` only
        ``stream_stride`` and ``stream_when_frozen`` apply: the MD is the
        Simulation's integrator. ``proposals.exchange_pairs`` must be empty.
    freeze_after : int or None
        Iteration after which the model is frozen for good.
    seed : int, optional
        The seed of every stream of the learning and the proposals (OpenMM's
        exchanges draw from Python's ``random``, the integrator from its own seed).
    settings : openmm_ddpm.settings.Settings, optional
        All of the above in one object.

    Attributes
    ----------
    learner : OnlineLearner or None
        None in a plain run (``plain_reason``).
    plain_reason : str or None
        Why the run has no training or proposals.
    iteration_statistics : list of IterationStatistics
    """

    def __init__(self, states, simulation, stepsPerIteration, reinitializeVelocities=False, *, representation=None,
                 model=None, training=None, proposals=None, dynamics=None, freeze_after=None, seed=None, settings=None):
        super().__init__(states, simulation, stepsPerIteration, reinitializeVelocities)
        if settings is None:
            settings = Settings.from_dict(dict(representation=representation, model=model, training=training,
                                               proposals=proposals, dynamics=dynamics, freeze_after=freeze_after, seed=seed))
        self.settings = settings
        self._check_settings(len(states))
        self.iteration_statistics = []
        self.learner, self._thermodynamic_states = None, None
        thermodynamic_states = thermodynamic_states_of(states, simulation.system, simulation.integrator)
        self.plain_reason = thermodynamic_states if isinstance(thermodynamic_states, str) else None
        if self.plain_reason is None:
            self._thermodynamic_states = thermodynamic_states
            self.plain_reason = plain_replica_exchange_reason(thermodynamic_states, settings, any_ladder=True)
        if self.plain_reason is not None:
            warn_plain_replica_exchange(self.plain_reason)
            return
        self.conditioning = state_conditioning(self._thermodynamic_states)
        self._energy_cache = EnergyContextCache(platform=simulation.context.getPlatform())
        reference = simulation.context.getState(positions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        targets = [self._kelvin(s) for s in settings.proposals.target_states]
        self.learner = OnlineLearner(settings, simulation.system, np.asarray(reference), targets,
                                     conditioning=self.conditioning.kind)
        self.learner.prepare()
        self._counts = dict(n_candidates=0, n_accepted=0, proposal_seconds=0.0)

    def _check_settings(self, n_states):
        for index in self.settings.proposals.target_states:
            if index >= n_states:
                raise ValueError(f"target state {index} does not exist ({n_states} states)")
        if self.settings.proposals.exchange_pairs:
            raise ValueError("proposals.exchange_pairs are not wired into OpenMM's sampler; leave them out here, "
                             "or use DDPMParallelTemperingSampler")

    def _kelvin(self, state_index):
        """The model's conditioning value of a state (K): its temperature, or its place in a ladder at one
        temperature (``conditioning``)."""
        return self.conditioning.kelvin[state_index]

    @property
    def _iteration(self):
        """The iteration being run (1-based, as openmmtools counts): OpenMM counts it done after the MD."""
        return self.currentIteration + 1

    # --- OpenMM's hooks -----------------------------------------------------------------------

    def simulateReplica(self, index, steps=None):
        """OpenMM's MD of one replica, streamed to the learner, then a proposal if the replica is at a target state."""
        if self.learner is None:
            return super().simulateReplica(index, steps)
        steps = self.stepsPerIteration if steps is None else int(steps)
        dynamics = self.settings.dynamics
        recording = dynamics.stream_when_frozen or phase_of(self._iteration, self.settings.freeze_after) != PHASE_PRODUCTION
        piece = dynamics.stream_stride if recording else steps
        frames, done = [], 0
        while done < steps:
            super().simulateReplica(index, min(piece, steps - done))
            done += min(piece, steps - done)
            frames.append(self.replicaConformation[index].getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        state_index = self.replicaStateIndex[index]
        self.learner.buffer.add(np.asarray(frames), self._kelvin(state_index))
        self._propose_if_due(index, state_index)

    def _propose_if_due(self, index, state_index):
        proposals = self.settings.proposals
        if (state_index not in proposals.target_states or self._iteration % proposals.propose_interval != 0
                or not self.learner.ready_to_propose):
            return
        start = time.perf_counter()
        conformation = self.replicaConformation[index]
        sampler_state = openmmtools_states.SamplerState(conformation.getPositions(asNumpy=True),
                                                        velocities=conformation.getVelocities(asNumpy=True),
                                                        box_vectors=conformation.getPeriodicBoxVectors())
        before = sampler_state.positions.value_in_unit(unit.nanometer).copy()
        proposal = self.learner.proposal_for(state_index, self.conditioning.of(state_index))
        proposal.apply(self._thermodynamic_states[state_index], sampler_state, self._energy_cache)
        self._counts["n_candidates"] += proposal.n_candidates
        self._counts["n_accepted"] += int(proposal.last_outcome.chosen > 0)
        if not np.array_equal(sampler_state.positions.value_in_unit(unit.nanometer), before):  # accepted, or relabelled
            context = self.simulation.context  # holds this replica: OpenMM computes its energies from it next
            context.setPositions(sampler_state.positions)
            context.setVelocities(sampler_state.velocities)
            self.replicaConformation[index] = context.getState(positions=True, velocities=True, parameters=True,
                                                               integratorParameters=True)
        self._counts["proposal_seconds"] += time.perf_counter() - start

    def exchangeReplicas(self):
        """OpenMM's exchanges, then the training of this iteration."""
        super().exchangeReplicas()
        if self.learner is None:
            return
        iteration = self.currentIteration
        phase = phase_of(iteration, self.settings.freeze_after)
        start = time.perf_counter()
        loss = self.learner.train_for_iteration(iteration, phase, self.settings.freeze_after)
        self.iteration_statistics.append(IterationStatistics(
            iteration, phase, loss, self._counts["n_candidates"], self._counts["n_accepted"], len(self.learner.buffer),
            time.perf_counter() - start, self._counts["proposal_seconds"]))
        self._counts = dict(n_candidates=0, n_accepted=0, proposal_seconds=0.0)

    # --- the learning state on disk -----------------------------------------------------------

    def save_learning_state(self, path):
        """Write the learner's state (model, optimizer, EMA, buffer, random streams) atomically; returns its SHA-256.

        Save it when OpenMM's ``ReplicaExchangeReporter`` writes its checkpoint,
        so the two describe the same iteration.
        """
        return save_atomic(self.learner.state_dict(self.currentIteration), path)

    def load_learning_state(self, path, expected_sha256=None):
        """Restore what ``save_learning_state`` wrote (weights-only, hash-checked when a hash is given)."""
        self.learner.load_state_dict(load_verified(path, expected_sha256))


def thermodynamic_states_of(states, system, integrator):
    """openmmtools ThermodynamicStates for OpenMM's state dicts, or why there are none (one line).

    Temperature-only dicts give the System at each temperature. Dicts of
    global parameters (with or without one shared temperature; without, the
    integrator's) give each state a copy of the System whose global
    parameter defaults are that state's values, so a proposal's weights use
    the energy that state's MD samples. Anything else (``groups``, a key
    that is no global parameter of the System) has no states here.
    """
    import copy

    names = _global_parameter_names(system)
    for index, state in enumerate(states):
        unknown = sorted(str(key) for key in set(state) - {"temperature"} - names)
        if unknown:
            return (f"state {index} sets {', '.join(unknown)}, which is not a global parameter of the System; for "
                    "proposals, give states as temperatures and/or global parameters only")
    temperatures = [s["temperature"] if "temperature" in s else integrator.getTemperature() for s in states]
    temperatures = [t if unit.is_quantity(t) else t * unit.kelvin for t in temperatures]
    systems = []
    for state in states:
        parameters = {key: value for key, value in state.items() if key != "temperature"}
        if not parameters:
            systems.append(system)
            continue
        systems.append(copy.deepcopy(system))
        _set_global_parameter_defaults(systems[-1], parameters)
    return [openmmtools_states.ThermodynamicState(s, t) for s, t in zip(systems, temperatures)]


def _global_parameter_names(system):
    return {force.getGlobalParameterName(i) for force in system.getForces()
            if hasattr(force, "getNumGlobalParameters") for i in range(force.getNumGlobalParameters())}


def _set_global_parameter_defaults(system, parameters):
    for force in system.getForces():
        for i in range(force.getNumGlobalParameters() if hasattr(force, "getNumGlobalParameters") else 0):
            name = force.getGlobalParameterName(i)
            if name in parameters:
                value = parameters[name]
                force.setGlobalParameterDefaultValue(i, value.value_in_unit_system(unit.md_unit_system)
                                                     if unit.is_quantity(value) else float(value))
