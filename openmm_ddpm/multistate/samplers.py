"""Drop-in openmmtools replica-exchange samplers with online diffusion proposals.

The only module of the package that knows every part (learner, moves,
checkpoints, storage); it holds nothing but the openmmtools classes.

Per iteration (DESIGN.md section 5):

1. openmmtools mixes replicas, then every replica is propagated (over MPI
   ranks as openmmtools distributes it); the default move,
   ``StreamingLangevinMove``, records a frame every ``stream_stride`` steps.
   The samplers hook in through openmmtools' overridable
   ``_propagate_replicas``/``_propagate_replica``, ``_report_iteration_items``
   and ``_restore_sampler_from_reporter`` (openmmtools 0.27; each calls the
   parent's body, none copies it);
2. on rank 0 the frames enter a ``ReplayBuffer`` with the conditioning value
   of the state they were sampled at (its temperature on a temperature
   ladder; its place in the ladder on one at a single temperature:
   ``conditioning``); every ``train_interval`` iterations the model
   takes ``train_steps`` optimizer steps (adaptive phase only);
3. on rank 0, every ``propose_interval`` iterations, the replica at each
   target state gets one exact ``GenerativeProposal`` move from a frozen
   float64 copy of the EMA model, and each pair of ``exchange_pairs`` one
   ``MappedExchange`` through the model's flow map; new positions are
   broadcast to every rank before openmmtools recomputes the energy matrix,
   so the swaps stay correct;
4. statistics go to the openmmtools storage (``online_analysis`` group, one
   entry per iteration), and at every storage checkpoint iteration the whole
   learning state is checkpointed atomically next to the storage, with its
   SHA-256 recorded in storage, and the storage snapshotted
   (``persistence.PersistenceMixin``: checkpoints, snapshots, resume).

From ``freeze_after`` iterations on the model is frozen for good and the run
is a homogeneous Markov chain that leaves the Boltzmann distribution of
every state invariant (docs/exactness.md).
"""
import logging
import time

import mpiplus
import numpy as np
from openmm import unit
from openmmtools import cache
from openmmtools.multistate import ParallelTemperingSampler, ReplicaExchangeSampler

from openmm_ddpm.moves.streaming import StreamingLangevinMove
from openmm_ddpm.multistate.contexts import EnergyContextCache
from openmm_ddpm.multistate.conditioning import state_conditioning
from openmm_ddpm.multistate.learner import PHASE_PRODUCTION, OnlineLearner, phase_of
from openmm_ddpm.multistate.persistence import PersistenceMixin
from openmm_ddpm.multistate.support import plain_replica_exchange_reason, warn_plain_replica_exchange
from openmm_ddpm.multistate.velocities import RescaledSwapsMixin
from openmm_ddpm.seeding import integer_seed, seed_replica_mixing
from openmm_ddpm.settings import GROUPS, Settings

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL = 25  # iterations between progress lines at INFO (DEBUG in between)


class DDPMSamplerMixin(PersistenceMixin):
    """What the DDPM samplers add to an openmmtools replica-exchange sampler.

    Parameters
    ----------
    mcmc_moves : openmmtools.mcmc.MCMCMove or list, optional
        Default: ``StreamingLangevinMove`` as ``dynamics`` says (2 fs, 1/ps,
        500 steps, a frame every 50 steps), seeded from ``seed``. With any
        other move, only the final configuration of each iteration is
        streamed, and the move's own seeds are the user's.
    representation, model, training, proposals, dynamics : dataclass or dict, optional
        The settings groups of ``openmm_ddpm.settings`` (``RepresentationSettings``,
        ``ModelSettings``, ``TrainingSettings``, ``ProposalSettings``,
        ``DynamicsSettings``); a dict is coerced, None gives the defaults.
    freeze_after : int or None
        Iteration after which the model is frozen for good (production phase).
        None: never frozen; the whole run is adaptive.
    seed : int, optional
        The run's one seed (default 0) (``openmm_ddpm.seeding``): initial weights,
        training, proposals, the default move's Langevin integrator and
        openmmtools' replica mixing all draw from streams spawned from it.
    settings : openmm_ddpm.settings.Settings, optional
        All of the above in one object (e.g. ``Settings.from_yaml``); the
        separate arguments must then be left out.
    **kwargs
        As the openmmtools sampler.
    """

    _any_ladder = False  # parallel tempering builds its states as a temperature ladder

    def __init__(self, mcmc_moves=None, representation=None, model=None, training=None, proposals=None,
                 dynamics=None, freeze_after=None, seed=None, settings=None, **kwargs):
        if settings is None:
            settings = Settings.from_dict(dict(representation=representation, model=model, training=training,
                                               proposals=proposals, dynamics=dynamics, freeze_after=freeze_after,
                                               seed=seed))
        elif any(v is not None for v in (representation, model, training, proposals, dynamics, freeze_after, seed)):
            raise ValueError("pass either settings=Settings(...) or the separate settings groups and seed, not both")
        for name in GROUPS:
            setattr(self, "_" + name, getattr(settings, name))
        self._freeze_after = None if settings.freeze_after is None else int(settings.freeze_after)
        self._seed = settings.seed
        self._settings = None  # openmmtools reports options as '_' + name; the groups are stored one by one
        if mcmc_moves is None:
            dynamics = self._dynamics
            mcmc_moves = StreamingLangevinMove(
                stream_stride=dynamics.stream_stride, timestep=dynamics.timestep, collision_rate=dynamics.collision_rate,
                n_steps=dynamics.n_steps, reassign_velocities=False, random_seed=integer_seed(self._seed, "dynamics"),
            )
        super().__init__(mcmc_moves=mcmc_moves, **kwargs)
        self._learner = None
        self._streamed_frames = {}
        self._ddpm_iteration_statistics = None
        self.last_proposal_updates = {}
        self.last_proposal_moves = {}  # rank 0: {state index: (before nm, after nm, accepted)} of this iteration
        self.last_proposal_outcomes = {}  # rank 0: {state index: MoveOutcome} of this iteration (waste recycling)
        self.last_exchange_outcomes = {}  # rank 0: {(i, j): ExchangeOutcome} of this iteration

    # --- options: settings dataclasses are stored as plain dicts --------------------------

    @property
    def options(self):
        options = super().options
        for name in GROUPS:
            options[name] = options[name].to_dict()
        options.pop("settings", None)  # stored group by group
        return options

    @property
    def settings(self):
        """Every settings group of this sampler (``openmm_ddpm.settings.Settings``)."""
        return Settings(**{name: getattr(self, "_" + name) for name in GROUPS}, freeze_after=self._freeze_after,
                        seed=self._seed)

    @property
    def learner(self):
        """The run's ``OnlineLearner`` (on MPI rank 0; None elsewhere or before the first iteration)."""
        return self._learner

    @property
    def last_iteration_statistics(self):
        """This iteration's ``ddpm_*`` statistics (phase, training loss and seconds, proposals, acceptance); {} before any."""
        return dict(self._ddpm_iteration_statistics or {})

    # --- create and validate ------------------------------------------------------------

    def _pre_write_create(self, thermodynamic_states, sampler_states, *args, **kwargs):
        self._validate_states(thermodynamic_states)
        super()._pre_write_create(thermodynamic_states, sampler_states, *args, **kwargs)

    def _validate_states(self, thermodynamic_states):
        for index in self._proposals.target_states:
            if index >= len(thermodynamic_states):
                raise ValueError(f"target state {index} does not exist ({len(thermodynamic_states)} states)")
        for pair in self._proposals.exchange_pairs:
            if max(pair) >= len(thermodynamic_states):
                raise ValueError(f"exchange pair {pair} names a state that does not exist ({len(thermodynamic_states)} states)")
        reason = plain_replica_exchange_reason(thermodynamic_states, self.settings, self._any_ladder)
        if reason is not None:
            warn_plain_replica_exchange(reason)

    @property
    def plain_reason(self):
        """Why this run has no training or proposals (plain replica exchange), or None if it has them."""
        if not hasattr(self, "_plain_reason"):
            self._plain_reason = plain_replica_exchange_reason(self._thermodynamic_states, self.settings, self._any_ladder)
        return self._plain_reason

    @property
    def conditioning(self):
        """The model's conditioning value of each state (``conditioning.StateConditioning``)."""
        if not hasattr(self, "_state_conditioning"):
            self._state_conditioning = state_conditioning(self._thermodynamic_states)
        return self._state_conditioning

    # --- the iteration -------------------------------------------------------------------------

    def _initialize_context_caches(self):
        """openmmtools' caches, with energies evaluated in Contexts that draw no random numbers (``EnergyContextCache``)."""
        super()._initialize_context_caches()
        if self.energy_context_cache is cache.global_context_cache:
            self.energy_context_cache = EnergyContextCache(capacity=None, time_to_live=None)

    def _mix_replicas(self):
        """openmmtools' replica mixing, its global numpy and numba generators seeded from the run's seed first
        (then ``RescaledSwapsMixin`` rescales the velocities of every replica that changed temperature)."""
        seed_replica_mixing(self._seed, self._iteration)
        return super()._mix_replicas()

    def _propagate_replicas(self):
        """openmmtools' propagation, then the streamed frames to rank 0: learn, propose, broadcast."""
        if self.plain_reason is not None:
            super()._propagate_replicas()
            self._streamed_frames.clear()
            return
        if self._learner is None:
            mpiplus.run_single_node(0, self._start_learner, broadcast_result=False)
        super()._propagate_replicas()
        # mpiplus.distribute gives replica i to the same rank as in the propagation (round robin),
        # so each rank hands over the frames of the replicas it propagated
        frames, replica_ids = mpiplus.distribute(self._take_streamed_frames, range(self.n_replicas), send_results_to=0)
        frames = dict(zip(replica_ids, frames)) if frames is not None else {}
        updates = mpiplus.run_single_node(0, self._learn_and_propose, frames, broadcast_result=True)
        for replica_id, (positions, velocities) in updates.items():
            self._sampler_states[replica_id].positions = positions
            if velocities is not None:  # redrawn on the constraint manifold's tangent space
                self._sampler_states[replica_id].velocities = velocities
        self.last_proposal_updates = updates  # {replica_id: (positions, velocities)} changed this iteration, every rank

    def _propagate_replica(self, replica_id):
        """openmmtools' propagation of one replica; keeps the frames its move streamed for ``_take_streamed_frames``.

        With ``stream_when_frozen=False`` the moves stop recording once the model is frozen for good (one MD
        call per replica, the same trajectory).
        """
        move = self._mcmc_moves[self._replica_thermodynamic_states[replica_id]]
        streaming = [m for m in _flatten_moves(move) if isinstance(m, StreamingLangevinMove)]
        for m in streaming:
            m.recording = self._dynamics.stream_when_frozen or self._phase() != PHASE_PRODUCTION
        propagated_state = super()._propagate_replica(replica_id)
        frames = [m.pop_frames() for m in streaming if m.streamed_frames]
        if not frames:
            final = self._sampler_states[replica_id].positions.value_in_unit(unit.nanometer)
            frames = [np.array(final)[None]]
        self._streamed_frames[replica_id] = np.concatenate(frames)
        return propagated_state

    def _take_streamed_frames(self, replica_id):
        """The frames (n, N, 3) nm the last propagation of this replica streamed (on the rank that ran it)."""
        return self._streamed_frames.pop(replica_id)

    def _phase(self):
        return phase_of(self._iteration, self._freeze_after)

    def _start_learner(self):
        """Rank 0: the learning state, prepared before the first MD step (``OnlineLearner.prepare``)."""
        self._learner = self._new_learner()
        self._learner.prepare()

    def _learn_and_propose(self, frames):
        """Rank 0: stream, train, propose, checkpoint (``_propagate_replicas`` started the learner).

        Returns {replica_id: new positions}.
        """
        learner, phase = self._learner, self._phase()
        for replica_id, replica_frames in frames.items():
            learner.buffer.add(replica_frames, self.conditioning.kelvin[self._replica_thermodynamic_states[replica_id]])
        start = time.perf_counter()
        loss = self._train_if_due(phase)
        training_seconds = time.perf_counter() - start
        start = time.perf_counter()
        updates, counts = self._propose_if_due()
        self._ddpm_iteration_statistics = dict(
            ddpm_phase=phase, ddpm_training_loss=loss, ddpm_training_seconds=training_seconds,
            ddpm_proposal_seconds=time.perf_counter() - start, ddpm_buffer_frames=len(learner.buffer),
            ddpm_training_steps=0 if learner.trainer is None else learner.trainer.n_steps_done, **counts,
        )
        self._ddpm_iteration_statistics["ddpm_checkpoint_sha256"] = self._checkpoint_if_due()
        self._log_progress(self._ddpm_iteration_statistics)
        return updates

    def _log_progress(self, statistics):
        phase = "production" if statistics["ddpm_phase"] == PHASE_PRODUCTION else "adaptive"
        proposed = statistics["ddpm_n_candidates"] > 0
        level = logging.INFO if self._iteration % PROGRESS_INTERVAL == 0 else logging.DEBUG
        logger.log(level,
            f"DDPM iteration {self._iteration} ({phase}): buffer {statistics['ddpm_buffer_frames']} frames, "
            f"{statistics['ddpm_training_steps']} training steps, loss {statistics['ddpm_training_loss']:.3f}, "
            + (f"{statistics['ddpm_n_accepted']} accepted / {len(self._proposals.target_states)} proposals, "
               f"ESS/(K+1) {statistics['ddpm_ess_fraction']:.2f}" if proposed else "no proposals")
        )

    def _train_if_due(self, phase):
        return self._learner.train_for_iteration(self._iteration, phase, self._freeze_after)

    def _propose_if_due(self):
        learner, settings = self._learner, self._proposals
        counts = dict(ddpm_n_candidates=0, ddpm_n_accepted=0, ddpm_n_invalid=0, ddpm_ess_fraction=float("nan"),
                      ddpm_n_exchanges=0, ddpm_n_exchanges_accepted=0)
        self.last_proposal_moves, self.last_proposal_outcomes, self.last_exchange_outcomes = {}, {}, {}
        if self._iteration % settings.propose_interval != 0 or not learner.ready_to_propose:
            return {}, counts
        updates, ess = {}, []
        for state_index in settings.target_states:
            replica_id = int(np.flatnonzero(self._replica_thermodynamic_states == state_index)[0])
            proposal = learner.proposal_for(state_index, self.conditioning.of(state_index))
            sampler_state = self._sampler_states[replica_id]
            before = sampler_state.positions.value_in_unit(unit.nanometer).copy()
            proposal.apply(self._thermodynamic_states[state_index], sampler_state, self.energy_context_cache)
            outcome = proposal.last_outcome
            counts["ddpm_n_candidates"] += proposal.n_candidates
            counts["ddpm_n_invalid"] += int(np.sum(~np.isfinite(outcome.log_weights[1:])))
            counts["ddpm_n_accepted"] += int(outcome.chosen > 0)
            after = sampler_state.positions.value_in_unit(unit.nanometer)
            self.last_proposal_moves[state_index] = (before, np.array(after), outcome.chosen > 0)
            self.last_proposal_outcomes[state_index] = outcome
            # broadcast any change, an accepted candidate or a relabelling of symmetric atoms
            if not np.array_equal(after, before):
                updates[replica_id] = (sampler_state.positions, sampler_state.velocities)
            ess.append(outcome.ess_fraction)
        counts["ddpm_ess_fraction"] = float(np.nanmean(ess)) if np.any(np.isfinite(ess)) else float("nan")
        updates.update(self._exchange(counts))
        return updates, counts

    def _exchange(self, counts):
        """Rank 0: the mapped exchanges of this proposal round; returns {replica_id: positions} that changed."""
        updates = {}
        for pair in self._proposals.exchange_pairs:
            replica_ids = [int(np.flatnonzero(self._replica_thermodynamic_states == s)[0]) for s in pair]
            sampler_states = [self._sampler_states[r] for r in replica_ids]
            before = [s.positions.value_in_unit(unit.nanometer).copy() for s in sampler_states]
            outcome = self._learner.exchange_for(pair).apply([self._thermodynamic_states[s] for s in pair], sampler_states,
                                                             self.energy_context_cache, states=pair)
            self.last_exchange_outcomes[pair] = outcome
            counts["ddpm_n_exchanges"] += 1
            counts["ddpm_n_exchanges_accepted"] += int(outcome.accepted)
            for replica_id, sampler_state, old in zip(replica_ids, sampler_states, before):
                if not np.array_equal(sampler_state.positions.value_in_unit(unit.nanometer), old):
                    updates[replica_id] = (sampler_state.positions, sampler_state.velocities)
        return updates

    def _new_learner(self):
        reference = self._sampler_states[0].positions.value_in_unit(unit.nanometer)
        targets = [self.conditioning.kelvin[int(s)] for s in self._proposals.target_states]
        return OnlineLearner(self.settings, self._thermodynamic_states[0].system, reference, targets,
                             conditioning=self.conditioning.kind)


class DDPMParallelTemperingSampler(DDPMSamplerMixin, RescaledSwapsMixin, ParallelTemperingSampler):
    __doc__ = (
        "``openmmtools.multistate.ParallelTemperingSampler`` with online diffusion training "
        "and exact generative proposals.\n" + DDPMSamplerMixin.__doc__.split("\n", 2)[2]
    )

    def create(self, thermodynamic_state, sampler_states, storage, min_temperature=None, max_temperature=None,
               n_temperatures=None, temperatures=None, **kwargs):
        """As ``ParallelTemperingSampler.create``; ``temperatures`` alone is enough."""
        if temperatures is not None and n_temperatures is None:
            n_temperatures = len(temperatures)
        super().create(thermodynamic_state, sampler_states, storage, min_temperature=min_temperature,
                       max_temperature=max_temperature, n_temperatures=n_temperatures,
                       temperatures=temperatures, **kwargs)


class DDPMReplicaExchangeSampler(DDPMSamplerMixin, RescaledSwapsMixin, ReplicaExchangeSampler):
    __doc__ = (
        "``openmmtools.multistate.ReplicaExchangeSampler`` with online diffusion training and exact "
        "generative proposals for states that differ only in temperature, or that share one temperature and differ "
        "in anything else (alchemical, restraint or pressure states, other Systems of the same atoms; the model is "
        "then conditioned on each state's place in the ladder: ``conditioning``). A ladder that varies both runs as "
        "plain replica exchange, with a warning.\n"
        + DDPMSamplerMixin.__doc__.split("\n", 2)[2]
    )

    _any_ladder = True


def _flatten_moves(move):
    # openmmtools' SubhookedABCMeta makes isinstance(m, SequenceMove) true for every move
    if hasattr(move, "move_list"):
        for inner in move.move_list:
            yield from _flatten_moves(inner)
    else:
        yield move
