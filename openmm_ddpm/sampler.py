"""Drop-in openmmtools replica-exchange samplers with online diffusion proposals.

Per iteration (DESIGN.md section 5):

1. openmmtools mixes replicas, then every replica is propagated (over MPI
   ranks as openmmtools distributes it); the default move,
   ``StreamingLangevinMove``, records a frame every ``stream_stride`` steps;
2. on rank 0 the frames enter a ``ReplayBuffer`` with the temperature of the
   state they were sampled at; every ``train_interval`` iterations the model
   takes ``train_steps`` optimizer steps (adaptive phase only);
3. on rank 0, every ``propose_interval`` iterations, the replica at each
   target state gets one exact ``GenerativeProposal`` move from a frozen
   float64 copy of the EMA model; new positions are broadcast to every rank
   before openmmtools recomputes the energy matrix, so the swaps stay correct;
4. statistics go to the openmmtools storage (``online_analysis`` group, one
   entry per iteration), and at every storage checkpoint iteration the whole
   learning state is checkpointed atomically next to the storage, with its
   SHA-256 recorded in storage.

From ``freeze_after`` iterations on the model is frozen for good and the run
is a homogeneous Markov chain that leaves the Boltzmann distribution of
every state invariant (docs/exactness.md).
"""
import dataclasses
import logging
import os
import time

import mpiplus
import numpy as np
import torch
from openmm import unit
from openmmtools import states
from openmmtools.multistate import ParallelTemperingSampler, ReplicaExchangeSampler

from openmm_ddpm import __version__
from openmm_ddpm.buffer import ReplayBuffer, StreamingLangevinMove
from openmm_ddpm.checkpoint import checkpoint_path, list_checkpoints, load_verified, prune_checkpoints, save_atomic
from openmm_ddpm.config import ModelSettings, OnlineTrainingSettings, ProposalSettings, RepresentationSettings
from openmm_ddpm.coordinates import CartesianCoordinates, Representation, Standardizer
from openmm_ddpm.diffusion import EDMDiffusion
from openmm_ddpm.mixture import TemperatureMixture
from openmm_ddpm.model import DiffusionProposalModel
from openmm_ddpm.molecules import molecular_coordinates
from openmm_ddpm.networks import ConditionedMLP
from openmm_ddpm.proposal import GenerativeProposal, ProposalStatistics, check_system_supported
from openmm_ddpm.trainer import OnlineTrainer, TrainingSettings, cosine_learning_rate

logger = logging.getLogger(__name__)

_SETTINGS = {
    "representation": RepresentationSettings,
    "model": ModelSettings,
    "training": OnlineTrainingSettings,
    "proposals": ProposalSettings,
}
PHASE_ADAPTIVE, PHASE_PRODUCTION = 0, 1
CHECKPOINTS_KEPT = 3
PROGRESS_INTERVAL = 25  # iterations between progress lines at INFO (DEBUG in between)


class OnlineDDPM:
    """The learning state of a run: buffer, model, trainer and proposal moves.

    Lives on MPI rank 0 only.

    Parameters
    ----------
    settings : dict
        ``representation``, ``model``, ``training``, ``proposals`` settings.
    system : openmm.System
        Masses (centre of mass) and harmonic bonds (internal coordinates).
    reference_positions : numpy.ndarray, (n_atoms, 3), nm
        Structure whose chirality internal coordinates keep.
    target_temperatures_kelvin : sequence of float, K
        Temperatures of the proposal target states (used by the training
        setting ``target_fraction``).
    """

    def __init__(self, settings, system, reference_positions, target_temperatures_kelvin=()):
        self.settings = settings
        self.target_temperatures_kelvin = tuple(float(t) for t in target_temperatures_kelvin)
        self.system = system
        self.reference_positions = np.asarray(reference_positions, dtype=float)
        self.buffer = ReplayBuffer(settings["training"].buffer_capacity, system.getNumParticles())
        self.device = _resolve_device(settings["model"].device)
        self.representation = None
        self.trainer = None
        self.proposals = {}
        self.frozen = False
        self.restored_from_iteration = None
        self._proposal_model = None
        self.relabel_rng = np.random.default_rng(settings["proposals"].seed)

    # --- learning -----------------------------------------------------------------

    def train(self, progress=None):
        """One training round on the buffer; returns the mean loss (nan if not ready).

        Parameters
        ----------
        progress : float, optional
            Share of the adaptive phase done (0 to 1); with the setting
            ``final_learning_rate`` it sets this round's learning rate
            (``cosine_learning_rate``). None keeps ``learning_rate``.
        """
        training = self.settings["training"]
        if len(self.buffer) < training.min_buffer_frames:
            return float("nan")
        positions, temperatures = self.buffer.arrays()
        if self.trainer is None:
            self._build_model(positions)
        if progress is not None and training.final_learning_rate is not None:
            self.trainer.set_learning_rate(cosine_learning_rate(progress, training.learning_rate,
                                                                training.final_learning_rate))
        subset = self._training_subset(temperatures)
        features, kelvin = self._features(positions[subset], temperatures[subset])
        return self.trainer.step(features, kelvin, training.train_steps)

    def _features(self, positions, temperatures, chunk=20_000):
        """Standardized features and temperatures (K) of frames, relabelled into the rotor windows.

        Frames no relabelling brings into the rotor windows are dropped.
        Works in chunks of ``chunk`` frames to bound the float64 memory.
        """
        coordinates = self.representation.coordinates
        parts, kelvins = [], []
        for start in range(0, len(positions), chunk):
            chosen = coordinates.relabel(positions[start:start + chunk].astype(np.float64), self.relabel_rng)
            raw, _ = coordinates.forward(chosen)
            keep = coordinates.in_domain(raw)
            features, _ = self.representation.standardizer.forward(raw[keep])
            parts.append(features.to(torch.float32))
            kelvins.append(torch.as_tensor(temperatures[start:start + chunk])[keep])
        return torch.cat(parts), torch.cat(kelvins)

    def refine(self, n_steps, report_every=5000):
        """Train ``n_steps`` more optimizer steps on the whole buffer, then refresh the proposal model.

        The buffer is featurized once (relabelled into the rotor windows);
        the learning rate restarts at ``learning_rate`` and decays along a
        cosine to ``final_learning_rate`` (``learning_rate / 100`` if that
        is None) over the ``n_steps``. The sampler calls this at the freeze
        (setting ``refine_steps``): the frozen model then depends only on
        the run's past at the freeze, so the production phase stays exact.
        ``refine_proposal_model`` calls it on a finished run.

        Parameters
        ----------
        n_steps : int
        report_every : int
            Optimizer steps between progress lines in the log.

        Returns
        -------
        float
            Mean training loss of the last ``report_every`` steps.
        """
        training = self.settings["training"]
        if self.trainer is None:
            raise ValueError("nothing to refine: the model has not been trained yet")
        final = training.final_learning_rate or training.learning_rate / 100.0
        start = time.perf_counter()
        features, kelvin = self._features(*self.buffer.arrays())
        logger.info(f"refining on {len(features)} frames for {n_steps} steps "
                    f"(featurized in {time.perf_counter() - start:.0f} s)")
        loss, done = float("nan"), 0
        while done < n_steps:
            chunk = min(report_every, n_steps - done)
            self.trainer.set_learning_rate(cosine_learning_rate(done / n_steps, training.learning_rate, final))
            loss = self.trainer.step(features, kelvin, chunk)
            done += chunk
            logger.info(f"refinement: {done}/{n_steps} steps, loss {loss:.3f}, {time.perf_counter() - start:.0f} s")
        self.refresh_proposal_model()
        return loss

    def _training_subset(self, temperatures):
        """Indices of the frames this round featurizes: as many as its minibatches can use,
        a share ``target_fraction`` of them at the target temperatures if asked."""
        training = self.settings["training"]
        size = min(len(temperatures), training.train_steps * training.batch_size)
        at_target = np.isin(np.round(temperatures, 3), np.round(np.asarray(self.target_temperatures_kelvin, dtype=np.float32), 3))
        if training.target_fraction is None or not at_target.any():
            return np.sort(self.relabel_rng.choice(len(temperatures), size=size, replace=False))
        n_target = int(round(training.target_fraction * size)) if (~at_target).any() else size
        parts = []
        for pool, n in ((np.flatnonzero(at_target), n_target), (np.flatnonzero(~at_target), size - n_target)):
            if n > 0:
                parts.append(self.relabel_rng.choice(pool, size=n, replace=n > len(pool)))
        return np.sort(np.concatenate(parts))

    def _coordinates(self, torsion_cuts=None, torsion_widths=None):
        settings = self.settings["representation"]
        if settings.kind == "internal":
            return molecular_coordinates(self.system, self.reference_positions, torsion_cuts,
                                         relative_sibling_torsions=settings.relative_sibling_torsions,
                                         torsion_widths=torsion_widths)
        return CartesianCoordinates(self.buffer.n_atoms, masses=_masses(self.system),
                                    remove_center_of_mass=settings.remove_center_of_mass)

    def _build_model(self, positions=None, standardizer=None, torsion_cuts=None, torsion_widths=None):
        coordinates = self._coordinates(torsion_cuts, torsion_widths)
        if standardizer is None:
            self.representation = Representation.fit(coordinates, positions.astype(np.float64))
        else:
            self.representation = Representation(coordinates, standardizer)
        model = self.settings["model"]
        with torch.random.fork_rng(devices=[]):  # initial weights from the settings' seed, global RNG untouched
            torch.manual_seed(self.settings["proposals"].seed)
            network = ConditionedMLP(coordinates.n_features, width=model.width, depth=model.depth,
                                     temperature_max_frequency=model.temperature_max_frequency).to(self.device)
        diffusion = EDMDiffusion(network, model.diffusion_settings())
        training = self.settings["training"]
        optimizer_settings = TrainingSettings(
            batch_size=training.batch_size, learning_rate=training.learning_rate, ema_decay=training.ema_decay
        )
        self.trainer = OnlineTrainer(diffusion, optimizer_settings, seed=self.settings["proposals"].seed)

    @property
    def proposal_model(self):
        """The frozen float64 model the proposal moves use (None before the first training round)."""
        return self._proposal_model

    @property
    def ready_to_propose(self):
        """True once the model has had ``min_training_steps`` optimizer steps, or is frozen for good.

        A frozen model will not improve by waiting, and its proposals are
        exact whatever its quality, so the production phase always proposes.
        """
        if self.trainer is None or self._proposal_model is None:
            return False
        return self.frozen or self.trainer.n_steps_done >= self.settings["proposals"].min_training_steps

    def refresh_proposal_model(self):
        """Give every proposal move a new frozen float64 copy of the EMA model."""
        self._proposal_model = DiffusionProposalModel(self.trainer.frozen_diffusion(), self.representation)
        for proposal in self.proposals.values():
            proposal.model = self._move_model()

    def _move_model(self):
        """What the moves draw from: the proposal model, or its temperature mixture if the settings ask."""
        settings = self.settings["proposals"]
        if tuple(float(s) for s in settings.temperature_factors) == (1.0,):
            return self._proposal_model
        return TemperatureMixture(self._proposal_model, settings.temperature_factors,
                                  settings.temperature_factor_weights or None)

    def proposal_for(self, state_index):
        """The GenerativeProposal of a target state (created on first use)."""
        if state_index not in self.proposals:
            settings = self.settings["proposals"]
            seed = np.random.SeedSequence([settings.seed, int(state_index)])
            self.proposals[state_index] = GenerativeProposal(
                self._move_model(), n_candidates=settings.n_candidates, random_state=np.random.default_rng(seed)
            )
        return self.proposals[state_index]

    # --- checkpoints ----------------------------------------------------------------

    def state_dict(self, iteration):
        state = {
            "package_version": __version__,
            "iteration": int(iteration),
            "reference_positions": torch.as_tensor(self.reference_positions),
            "frozen": self.frozen,
            "buffer": {k: (torch.as_tensor(v) if isinstance(v, np.ndarray) else v) for k, v in self.buffer.state_dict().items()},
            "proposals": {
                str(k): {"rng": p.rng.bit_generator.state, "torch_generator": p.torch_generator.get_state(),
                         "statistics": vars(p.statistics).copy()}
                for k, p in self.proposals.items()
            },
        }
        if self.trainer is not None:
            state["trainer"] = self.trainer.state_dict()
            state.update(self._representation_state())
        return state

    def _representation_state(self):
        """The fitted representation: standardizer, and torsion and rotor windows where there are any."""
        state = {"standardizer": self.representation.standardizer.state_dict()}
        cuts = getattr(self.representation.coordinates, "torsion_cuts", None)
        if cuts is not None:
            state["torsion_cuts"] = cuts.clone()
            state["torsion_widths"] = self.representation.coordinates.torsion_widths.clone()
        return state

    def _rebuild_model(self, state):
        """A fresh network on the representation ``_representation_state`` saved in ``state``."""
        self._build_model(standardizer=Standardizer.from_state_dict(state["standardizer"]),
                          torsion_cuts=state.get("torsion_cuts"), torsion_widths=state.get("torsion_widths"))

    def load_state_dict(self, state):
        self.buffer = ReplayBuffer.from_state_dict({k: (v.numpy() if torch.is_tensor(v) else v) for k, v in state["buffer"].items()})
        self.frozen = bool(state["frozen"])
        self.reference_positions = state["reference_positions"].numpy()
        if "trainer" in state:
            self._rebuild_model(state)
            self.trainer.load_state_dict(state["trainer"])
            self.refresh_proposal_model()
        for key, saved in state["proposals"].items():
            proposal = self.proposal_for(int(key))
            proposal.rng.bit_generator.state = saved["rng"]
            proposal.torch_generator.set_state(saved["torch_generator"])
            proposal.statistics = ProposalStatistics(**saved["statistics"])


class _DDPMSamplerMixin:
    """What the DDPM samplers add to an openmmtools replica-exchange sampler.

    Parameters
    ----------
    mcmc_moves : openmmtools.mcmc.MCMCMove or list, optional
        Default: ``StreamingLangevinMove`` (2 fs, 1/ps, 500 steps, a frame
        every ``training.stream_stride`` steps). With any other move, only the
        final configuration of each iteration is streamed.
    representation : RepresentationSettings or dict, optional
    model : ModelSettings or dict, optional
    training : OnlineTrainingSettings or dict, optional
    proposals : ProposalSettings or dict, optional
    freeze_after : int or None
        Iteration after which the model is frozen for good (production phase).
        None: never frozen; the whole run is adaptive.
    **kwargs
        As the openmmtools sampler.
    """

    def __init__(self, mcmc_moves=None, representation=None, model=None, training=None, proposals=None,
                 freeze_after=None, **kwargs):
        self._representation = RepresentationSettings.coerce(representation)
        self._model = ModelSettings.coerce(model)
        self._training = OnlineTrainingSettings.coerce(training)
        self._proposals = ProposalSettings.coerce(proposals)
        if freeze_after is not None and int(freeze_after) < 0:
            raise ValueError(f"freeze_after must be >= 0 or None, got {freeze_after}")
        self._freeze_after = None if freeze_after is None else int(freeze_after)
        if mcmc_moves is None:
            mcmc_moves = StreamingLangevinMove(
                stream_stride=self._training.stream_stride, timestep=2.0 * unit.femtosecond,
                collision_rate=1.0 / unit.picosecond, n_steps=500, reassign_velocities=False,
            )
        super().__init__(mcmc_moves=mcmc_moves, **kwargs)
        self._ddpm = None
        self._ddpm_iteration_statistics = None
        self.last_proposal_updates = {}
        self.last_proposal_moves = {}  # rank 0: {state index: (before nm, after nm, accepted)} of this iteration

    # --- options: settings dataclasses are stored as plain dicts --------------------------

    @property
    def options(self):
        options = super().options
        for name in _SETTINGS:
            options[name] = options[name].to_dict()
        return options

    @property
    def ddpm(self):
        """The run's ``OnlineDDPM`` (on MPI rank 0; None elsewhere or before the first iteration)."""
        return self._ddpm

    @property
    def run_directory(self):
        """Directory of the model checkpoints, next to the storage file."""
        return run_directory_of(self._reporter.filepath)

    def _settings(self):
        return {"representation": self._representation, "model": self._model,
                "training": self._training, "proposals": self._proposals}

    # --- create and validate ------------------------------------------------------------

    def _pre_write_create(self, thermodynamic_states, sampler_states, *args, **kwargs):
        self._validate_states(thermodynamic_states)
        super()._pre_write_create(thermodynamic_states, sampler_states, *args, **kwargs)

    def _validate_states(self, thermodynamic_states):
        for index in self._proposals.target_states:
            if index >= len(thermodynamic_states):
                raise ValueError(f"target state {index} does not exist ({len(thermodynamic_states)} states)")
        check_system_supported(thermodynamic_states[0].system)

    # --- the iteration -------------------------------------------------------------------------

    def _propagate_replicas(self):
        frames = self._propagate_and_collect_frames()
        updates = mpiplus.run_single_node(0, self._learn_and_propose, frames, broadcast_result=True)
        for replica_id, positions in updates.items():
            self._sampler_states[replica_id].positions = positions
        self.last_proposal_updates = updates  # {replica_id: positions} accepted this iteration, on every rank

    def _propagate_and_collect_frames(self):
        """openmmtools' replica propagation, also gathering streamed frames on rank 0."""
        results, replica_ids = mpiplus.distribute(
            self._propagate_replica_and_frames, range(self.n_replicas), send_results_to=0
        )
        frames = {}
        for replica_id, (propagated_state, replica_frames) in zip(replica_ids, results):
            self._sampler_states[replica_id].__setstate__(propagated_state, ignore_velocities=False)
            frames[replica_id] = replica_frames
        all_statistics = mpiplus.distribute(
            self._get_replica_move_statistics, range(self.n_replicas), send_results_to="all"
        )
        for replica_id in range(self.n_replicas):
            if len(all_statistics[replica_id]) > 0:
                state_id = self._replica_thermodynamic_states[replica_id]
                self._mcmc_moves[state_id].statistics = all_statistics[replica_id]
        return frames

    def _propagate_replica_and_frames(self, replica_id):
        propagated_state = self._propagate_replica(replica_id)
        move = self._mcmc_moves[self._replica_thermodynamic_states[replica_id]]
        streaming = [m for m in _flatten_moves(move) if isinstance(m, StreamingLangevinMove)]
        frames = [m.pop_frames() for m in streaming if m.streamed_frames]
        if not frames:
            final = self._sampler_states[replica_id].positions.value_in_unit(unit.nanometer)
            frames = [np.array(final)[None]]
        return propagated_state, np.concatenate(frames)

    def _phase(self):
        frozen = self._freeze_after is not None and self._iteration > self._freeze_after
        return PHASE_PRODUCTION if frozen else PHASE_ADAPTIVE

    def _learn_and_propose(self, frames):
        """Rank 0: stream, train, propose, checkpoint. Returns {replica_id: new positions}."""
        if self._ddpm is None:
            self._ddpm = self._new_ddpm()
        ddpm, phase = self._ddpm, self._phase()
        for replica_id, replica_frames in frames.items():
            ddpm.buffer.add(replica_frames, self._state_of(replica_id).temperature.value_in_unit(unit.kelvin))
        start = time.perf_counter()
        loss = self._train_if_due(phase)
        training_seconds = time.perf_counter() - start
        start = time.perf_counter()
        updates, counts = self._propose_if_due()
        self._ddpm_iteration_statistics = dict(
            ddpm_phase=phase, ddpm_training_loss=loss, ddpm_training_seconds=training_seconds,
            ddpm_proposal_seconds=time.perf_counter() - start, ddpm_buffer_frames=len(ddpm.buffer),
            ddpm_training_steps=0 if ddpm.trainer is None else ddpm.trainer.n_steps_done, **counts,
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
        ddpm = self._ddpm
        if phase == PHASE_PRODUCTION:
            loss = float("nan")
            if not ddpm.frozen and ddpm.trainer is not None:
                if self._training.refine_steps > 0:
                    loss = ddpm.refine(self._training.refine_steps)  # refreshes the proposal model
                else:
                    ddpm.refresh_proposal_model()
                ddpm.frozen = True
                logger.info(f"iteration {self._iteration}: model frozen for the production phase")
                if ddpm.trainer.n_steps_done < self._proposals.min_training_steps:
                    logger.warning(f"the model froze after {ddpm.trainer.n_steps_done} training steps, fewer than "
                                   f"min_training_steps={self._proposals.min_training_steps}; it proposes anyway")
            return loss
        if self._iteration % self._training.train_interval != 0:
            return float("nan")
        progress = None if self._freeze_after is None else self._iteration / max(self._freeze_after, 1)
        loss = ddpm.train(progress)
        if np.isfinite(loss):
            ddpm.refresh_proposal_model()
        return loss

    def _propose_if_due(self):
        ddpm, settings = self._ddpm, self._proposals
        counts = dict(ddpm_n_candidates=0, ddpm_n_accepted=0, ddpm_n_invalid=0, ddpm_ess_fraction=float("nan"))
        self.last_proposal_moves = {}
        if self._iteration % settings.propose_interval != 0 or not ddpm.ready_to_propose:
            return {}, counts
        updates, ess = {}, []
        for state_index in settings.target_states:
            replica_id = int(np.flatnonzero(self._replica_thermodynamic_states == state_index)[0])
            proposal = ddpm.proposal_for(state_index)
            sampler_state = self._sampler_states[replica_id]
            before = sampler_state.positions.value_in_unit(unit.nanometer).copy()
            proposal.apply(self._thermodynamic_states[state_index], sampler_state, self.energy_context_cache)
            outcome = proposal.last_outcome
            counts["ddpm_n_candidates"] += proposal.n_candidates
            counts["ddpm_n_invalid"] += int(np.sum(~np.isfinite(outcome.log_weights[1:])))
            counts["ddpm_n_accepted"] += int(outcome.chosen > 0)
            after = sampler_state.positions.value_in_unit(unit.nanometer)
            self.last_proposal_moves[state_index] = (before, np.array(after), outcome.chosen > 0)
            # broadcast any change, an accepted candidate or a relabelling of symmetric atoms
            if not np.array_equal(after, before):
                updates[replica_id] = sampler_state.positions
            ess.append(outcome.ess_fraction)
        counts["ddpm_ess_fraction"] = float(np.nanmean(ess)) if np.any(np.isfinite(ess)) else float("nan")
        return updates, counts

    def _new_ddpm(self):
        reference = self._sampler_states[0].positions.value_in_unit(unit.nanometer)
        settings = self._settings()
        targets = [self._thermodynamic_states[int(s)].temperature.value_in_unit(unit.kelvin)
                   for s in settings["proposals"].target_states if int(s) < len(self._thermodynamic_states)]
        return OnlineDDPM(settings, self._thermodynamic_states[0].system, reference, targets)

    def _state_of(self, replica_id):
        return self._thermodynamic_states[self._replica_thermodynamic_states[replica_id]]

    # --- storage, checkpoints and resume -------------------------------------------------

    def _checkpoint_if_due(self):
        """Save the learning state at storage checkpoint iterations; return its hash ('' if none)."""
        if self._iteration % self._reporter.checkpoint_interval != 0:
            return ""
        path = checkpoint_path(self.run_directory, self._iteration)
        digest = save_atomic(self._ddpm.state_dict(self._iteration), path)
        prune_checkpoints(self.run_directory, keep=CHECKPOINTS_KEPT)
        return digest

    @mpiplus.on_single_node(rank=0, broadcast_result=False, sync_nodes=False)
    @mpiplus.delayed_termination
    def _report_iteration_items(self):
        super()._report_iteration_items()
        statistics = dict(self._ddpm_iteration_statistics or {})
        digest = statistics.pop("ddpm_checkpoint_sha256", "")
        if statistics:
            self._reporter.write_online_analysis_data(self._iteration, **statistics)
        if digest:
            self._reporter.write_dict(f"ddpm_checkpoint_{self._iteration}", {"sha256": digest, "package_version": __version__})

    def _restore_sampler_from_reporter(self, reporter):
        super()._restore_sampler_from_reporter(reporter)
        mpiplus.run_single_node(0, self._restore_ddpm, reporter, broadcast_result=False)

    def _restore_ddpm(self, reporter):
        """Load the newest intact checkpoint not newer than the restored iteration."""
        state, iteration = newest_intact_checkpoint(reporter, max_iteration=self._iteration)
        if state is None:
            logger.warning("no intact DDPM checkpoint found: the model starts from scratch")
            return
        self._ddpm = self._new_ddpm()
        self._ddpm.load_state_dict(state)
        self._ddpm.restored_from_iteration = iteration
        logger.info(f"restored the DDPM learning state of iteration {iteration}")


def newest_intact_checkpoint(reporter, max_iteration=None):
    """The newest DDPM checkpoint whose SHA-256 matches the one recorded in storage.

    Parameters
    ----------
    reporter : openmmtools.multistate.MultiStateReporter
        Open reporter of the run.
    max_iteration : int, optional
        Ignore checkpoints of later iterations.

    Returns
    -------
    state : dict or None
    iteration : int or None
    """
    directory = run_directory_of(reporter.filepath)
    iterations = [i for i in list_checkpoints(directory) if max_iteration is None or i <= max_iteration]
    for iteration in reversed(iterations):
        try:
            recorded = reporter.read_dict(f"ddpm_checkpoint_{iteration}")["sha256"]
            return load_verified(checkpoint_path(directory, iteration), recorded), iteration
        except Exception as error:  # missing record, hash mismatch, unreadable file
            logger.warning(f"skipping DDPM checkpoint of iteration {iteration}: {error}")
    return None, None


def load_proposal_model(storage):
    """The proposal model of a run's newest intact checkpoint, for analysis and generation.

    Parameters
    ----------
    storage : str
        openmmtools storage file of a DDPM sampler run.

    Returns
    -------
    model : openmm_ddpm.model.DiffusionProposalModel
        Frozen float64 EMA model, as the run's proposals used it.
    ddpm : OnlineDDPM
        The whole learning state (buffer, trainer, statistics).
    iteration : int
        Iteration of the checkpoint.
    """
    from openmmtools import multistate

    reporter = multistate.MultiStateReporter(storage, open_mode="r")
    try:
        options = reporter.read_dict("options")
        thermodynamic_states, _ = reporter.read_thermodynamic_states()
        state, iteration = newest_intact_checkpoint(reporter)
    finally:
        reporter.close()
    if state is None or "trainer" not in state:
        raise FileNotFoundError(f"no intact checkpoint with a trained model next to {storage} (in {run_directory_of(storage)})")
    settings = {name: cls.coerce(options[name]) for name, cls in _SETTINGS.items()}
    targets = [thermodynamic_states[int(s)].temperature.value_in_unit(unit.kelvin)
               for s in settings["proposals"].target_states if int(s) < len(thermodynamic_states)]
    ddpm = OnlineDDPM(settings, thermodynamic_states[0].system, state["reference_positions"].numpy(), targets)
    ddpm.load_state_dict(state)
    return ddpm.proposal_model, ddpm, iteration


def export_proposal_model(ddpm, path, iteration):
    """Write the proposal model of a learning state to a small file.

    Keeps what scoring and generation need, without the buffer, optimizer
    or statistics: settings, standardization, torsion and rotor windows,
    reference structure and EMA weights (weights only, no code; load with
    ``load_exported_model``). For a finished run:
    ``_, ddpm, iteration = load_proposal_model(storage)`` first. Pass the
    live state (``sampler.ddpm``) while the sampler still holds its
    storage open: opening the storage a second time in the same process
    is what HDF5 does not survive.

    Parameters
    ----------
    ddpm : OnlineDDPM
        A trained learning state (``sampler.ddpm``, or from ``load_proposal_model``).
    path : str
    iteration : int
        Iteration the state belongs to (recorded).

    Returns
    -------
    str
        SHA-256 of the written file.
    """
    if ddpm.trainer is None:
        raise ValueError("nothing to export: the model has not been trained yet")
    state = {
        "package_version": __version__, "iteration": int(iteration),
        "settings": {name: ddpm.settings[name].to_dict() for name in _SETTINGS},
        "reference_positions": torch.as_tensor(ddpm.reference_positions),
        "ema_network": ddpm.trainer.ema_network.state_dict(),
        **ddpm._representation_state(),
    }
    return save_atomic(state, path)


def load_exported_model(path, system, expected_sha256=None):
    """The proposal model of ``export_proposal_model``, for the System it was trained on.

    Parameters
    ----------
    path : str
    system : openmm.System
        Rotor symmetry is verified on it again.
    expected_sha256 : str, optional
        Refuse the file if its hash differs.

    Returns
    -------
    openmm_ddpm.model.DiffusionProposalModel
        Frozen, float64.
    """
    state = load_verified(path, expected_sha256)
    settings = {name: cls.coerce(state["settings"][name]) for name, cls in _SETTINGS.items()}
    settings["model"] = dataclasses.replace(settings["model"], device="cpu")
    ddpm = OnlineDDPM(settings, system, state["reference_positions"].numpy())
    ddpm._rebuild_model(state)
    ddpm.trainer.ema_network.load_state_dict(state["ema_network"])
    ddpm.refresh_proposal_model()
    return ddpm.proposal_model


class DDPMParallelTemperingSampler(_DDPMSamplerMixin, ParallelTemperingSampler):
    __doc__ = (
        "``openmmtools.multistate.ParallelTemperingSampler`` with online diffusion training "
        "and exact generative proposals.\n" + _DDPMSamplerMixin.__doc__.split("\n", 2)[2]
    )

    def create(self, thermodynamic_state, sampler_states, storage, min_temperature=None, max_temperature=None,
               n_temperatures=None, temperatures=None, **kwargs):
        """As ``ParallelTemperingSampler.create``; ``temperatures`` alone is enough."""
        if temperatures is not None and n_temperatures is None:
            n_temperatures = len(temperatures)
        super().create(thermodynamic_state, sampler_states, storage, min_temperature=min_temperature,
                       max_temperature=max_temperature, n_temperatures=n_temperatures,
                       temperatures=temperatures, **kwargs)


class DDPMReplicaExchangeSampler(_DDPMSamplerMixin, ReplicaExchangeSampler):
    __doc__ = (
        "``openmmtools.multistate.ReplicaExchangeSampler`` with online diffusion training and exact "
        "generative proposals, for states that share one System and differ only in temperature.\n"
        + _DDPMSamplerMixin.__doc__.split("\n", 2)[2]
    )

    def _validate_states(self, thermodynamic_states):
        reference = thermodynamic_states[0]
        for index, state in enumerate(thermodynamic_states):
            if type(state) is not states.ThermodynamicState:
                raise ValueError(
                    f"state {index} is a {type(state).__name__}: DDPMReplicaExchangeSampler needs plain "
                    "ThermodynamicStates that differ only in temperature (the model is conditioned on T only)"
                )
            if not reference.is_state_compatible(state) or state.pressure != reference.pressure:
                raise ValueError(
                    f"state {index} differs from state 0 in more than temperature; use one System and "
                    "vary only the temperature (or DDPMParallelTemperingSampler)"
                )
        super()._validate_states(thermodynamic_states)


def run_directory_of(storage):
    """Directory of a run's DDPM checkpoints: ``<storage without extension>_ddpm``."""
    root, _ = os.path.splitext(os.path.abspath(storage))
    return root + "_ddpm"


def _flatten_moves(move):
    # openmmtools' SubhookedABCMeta makes isinstance(m, SequenceMove) true for every move
    if hasattr(move, "move_list"):
        for inner in move.move_list:
            yield from _flatten_moves(inner)
    else:
        yield move


def _masses(system):
    return np.array([system.getParticleMass(i).value_in_unit(unit.amu) for i in range(system.getNumParticles())])


def _resolve_device(device):
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def read_ddpm_statistics(storage):
    """Per-iteration DDPM statistics of a run, as a dict of numpy arrays.

    Parameters
    ----------
    storage : str
        Path of the openmmtools storage file.

    Returns
    -------
    dict
        One float array per statistic, indexed by iteration (``ddpm_phase``,
        ``ddpm_n_candidates``, ``ddpm_n_accepted``, ``ddpm_n_invalid``,
        ``ddpm_ess_fraction``, ``ddpm_training_loss``, ``ddpm_training_seconds``,
        ``ddpm_proposal_seconds``, ``ddpm_buffer_frames``,
        ``ddpm_training_steps``); NaN where an iteration wrote none.
    """
    import netCDF4

    with netCDF4.Dataset(storage, "r") as dataset:
        group = dataset.groups["online_analysis"]
        suffix = "_history"
        return {
            name[: -len(suffix)]: np.ma.filled(group.variables[name][:, 0].astype(float), np.nan)
            for name in group.variables
            if name.startswith("ddpm_") and name.endswith(suffix)
        }
