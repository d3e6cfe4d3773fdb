"""The online learner: replay buffer -> trainer -> frozen float64 proposal model, and the moves that use it.

``OnlineLearner`` holds a run's learning state on MPI rank 0: the frames
streamed so far, the representation fitted on the first of them, the
network with its optimizer and EMA weights, and one ``GenerativeProposal``
per target state. The samplers call ``train`` (adaptive phase), ``refine``
and ``refresh_proposal_model`` (at the freeze) and ``proposal_for``;
``state_dict``/``load_state_dict`` are its checkpoint. May import
``model``, ``coordinates``, ``moves``, ``settings``; never the samplers.
"""
import logging
import time

import numpy as np
import torch
from openmm import unit

from openmm_ddpm._version import __version__
from openmm_ddpm.coordinates.cartesian import CartesianCoordinates
from openmm_ddpm.coordinates.constraints import constrained_coordinates
from openmm_ddpm.coordinates.molecules import molecular_coordinates
from openmm_ddpm.coordinates.representation import Representation, Standardizer
from openmm_ddpm.model.diffusion import EDMDiffusion
from openmm_ddpm.model.networks import ConditionedMLP
from openmm_ddpm.model.proposal_model import DiffusionProposalModel
from openmm_ddpm.model.trainer import OnlineTrainer, cosine_learning_rate
from openmm_ddpm.moves.mapped_exchange import MappedExchange
from openmm_ddpm.moves.mixture import TemperatureMixture
from openmm_ddpm.moves.proposal import GenerativeProposal, ProposalStatistics
from openmm_ddpm.multistate.buffer import ReplayBuffer
from openmm_ddpm.multistate.conditioning import TEMPERATURE, state_conditioning
from openmm_ddpm.seeding import integer_seed, numpy_generator

logger = logging.getLogger(__name__)

PHASE_ADAPTIVE, PHASE_PRODUCTION = 0, 1
MIN_FIT_FRAMES = 2  # the standardization needs two frames, whatever training.min_buffer_frames says


def phase_of(iteration, freeze_after):
    """PHASE_PRODUCTION once ``iteration`` > ``freeze_after`` (never for None), else PHASE_ADAPTIVE."""
    return PHASE_PRODUCTION if freeze_after is not None and iteration > freeze_after else PHASE_ADAPTIVE


class OnlineLearner:
    """The learning state of a run: buffer -> trainer -> frozen proposal model, and the proposal moves.

    Lives on MPI rank 0 only.

    Parameters
    ----------
    settings : openmm_ddpm.settings.Settings
    system : openmm.System
        Masses (centre of mass) and harmonic bonds (internal coordinates).
    reference_positions : numpy.ndarray, (n_atoms, 3), nm
        Structure whose chirality internal coordinates keep.
    target_temperatures_kelvin : sequence of float, K
        Temperatures of the proposal target states (used by the training
        setting ``target_fraction``).
    conditioning : str
        What the model's conditioning value is (``conditioning.TEMPERATURE``, the default, or
        ``conditioning.LADDER_POSITION``); exported with the model, so that a model of a ladder at one
        temperature is never drawn from as if conditioned on temperature.
    """

    def __init__(self, settings, system, reference_positions, target_temperatures_kelvin=(), conditioning=TEMPERATURE):
        self.settings = settings
        self.conditioning_kind = str(conditioning)
        self.target_temperatures_kelvin = tuple(float(t) for t in target_temperatures_kelvin)
        self.system = system
        self.reference_positions = np.asarray(reference_positions, dtype=float)
        self.buffer = ReplayBuffer(settings.training.buffer_capacity, system.getNumParticles())
        self.device = _resolve_device(settings.model.device)
        self.representation = None
        self.trainer = None
        self.proposals = {}
        self.exchanges = {}  # (i, j) -> MappedExchange
        self.frozen = False
        self.restored_from_iteration = None
        self._proposal_model = None
        self.relabel_rng = numpy_generator(settings.seed, "relabel")

    def prepare(self):
        """Do now what the first model build needs of OpenMM (the rotor symmetry check), before any dynamics."""
        if self.settings.representation.resolved_kind(self.system) == "internal":
            self._coordinates()

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
        training = self.settings.training
        if len(self.buffer) < max(training.min_buffer_frames, MIN_FIT_FRAMES):
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

    def train_for_iteration(self, iteration, phase, freeze_after):
        """The training a sampler's iteration asks for; returns its mean loss (nan if none).

        Adaptive phase: a training round every ``train_interval`` iterations
        (the learning rate following the share of the phase done), then a
        fresh proposal model. First production iteration: the refinement
        (``refine_steps``) or a last refresh, then frozen for good.
        """
        if phase == PHASE_PRODUCTION:
            return self._freeze(iteration)
        if iteration % self.settings.training.train_interval != 0:
            return float("nan")
        loss = self.train(None if freeze_after is None else iteration / max(freeze_after, 1))
        if np.isfinite(loss):
            self.refresh_proposal_model()
        return loss

    def _freeze(self, iteration):
        if self.frozen:
            return float("nan")
        if self.trainer is None:  # never trained: say so once, and stay without proposals
            self.frozen = True
            logger.warning(f"iteration {iteration}: the production phase starts without a model (the buffer held "
                           f"{len(self.buffer)} frames, training needs {self.settings.training.min_buffer_frames}): "
                           "it runs as plain replica exchange; lower training.min_buffer_frames or freeze later")
            return float("nan")
        loss = float("nan")
        if self.settings.training.refine_steps > 0:
            loss = self.refine(self.settings.training.refine_steps)  # refreshes the proposal model
        else:
            self.refresh_proposal_model()
        self.frozen = True
        logger.info(f"iteration {iteration}: model frozen for the production phase")
        minimum = self.settings.proposals.min_training_steps
        if self.trainer.n_steps_done < minimum:
            logger.warning(f"the model froze after {self.trainer.n_steps_done} training steps, fewer than "
                           f"min_training_steps={minimum}; it proposes anyway")
        return loss

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
        training = self.settings.training
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
        training = self.settings.training
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
        settings = self.settings.representation
        if settings.resolved_kind(self.system) == "internal":
            coordinates = molecular_coordinates(self.system, self.reference_positions, torsion_cuts,
                                                relative_sibling_torsions=settings.relative_sibling_torsions,
                                                torsion_widths=torsion_widths)
            return constrained_coordinates(self.system, coordinates)
        return CartesianCoordinates(self.buffer.n_atoms, masses=_masses(self.system),
                                    remove_center_of_mass=settings.remove_center_of_mass)

    def _build_model(self, positions=None, standardizer=None, torsion_cuts=None, torsion_widths=None):
        coordinates = self._coordinates(torsion_cuts, torsion_widths)
        if standardizer is None:
            self.representation = Representation.fit(coordinates, positions.astype(np.float64), self.relabel_rng)
        else:
            self.representation = Representation(coordinates, standardizer)
        model = self.settings.model
        with torch.random.fork_rng(devices=[]):  # initial weights from the run's seed, global RNG untouched
            torch.manual_seed(integer_seed(self.settings.seed, "network"))
            network = ConditionedMLP(coordinates.n_features, width=model.width, depth=model.depth,
                                     temperature_max_frequency=model.temperature_max_frequency).to(self.device)
        diffusion = EDMDiffusion(network, model.diffusion_settings())
        self.trainer = OnlineTrainer(diffusion, self.settings.training, seed=integer_seed(self.settings.seed, "training"))

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
        return self.frozen or self.trainer.n_steps_done >= self.settings.proposals.min_training_steps

    def refresh_proposal_model(self):
        """Give every proposal move a new frozen float64 copy of the EMA model."""
        self._proposal_model = DiffusionProposalModel(self.trainer.frozen_diffusion(), self.representation,
                                                      conditioning=self.conditioning_kind)
        for proposal in self.proposals.values():
            proposal.model = self._move_model()
        for exchange in self.exchanges.values():
            exchange.model = self._proposal_model

    def _move_model(self):
        """What the moves draw from: the proposal model, or its temperature mixture if the settings ask."""
        settings = self.settings.proposals
        if tuple(float(s) for s in settings.temperature_factors) == (1.0,):
            return self._proposal_model
        return TemperatureMixture(self._proposal_model, settings.temperature_factors,
                                  settings.temperature_factor_weights or None)

    def proposal_for(self, state_index, condition=None):
        """The GenerativeProposal of a target state (created on first use).

        ``condition`` (openmm.unit.Quantity, K): what the model is conditioned on for that state
        (``conditioning.StateConditioning.of``); None: the state's temperature.
        """
        if state_index not in self.proposals:
            settings = self.settings.proposals
            self.proposals[state_index] = GenerativeProposal(
                self._move_model(), n_candidates=settings.n_candidates,
                random_state=numpy_generator(self.settings.seed, "proposal", state_index),
            )
        if condition is not None:  # also for a proposal restored from a checkpoint
            self.proposals[state_index].condition = condition
        return self.proposals[state_index]

    def exchange_for(self, pair):
        """The MappedExchange of a state pair (i, j) (created on first use); it maps with the model itself."""
        pair = tuple(int(k) for k in pair)
        if pair not in self.exchanges:
            self.exchanges[pair] = MappedExchange(self._proposal_model,
                                                  random_state=numpy_generator(self.settings.seed, "exchange", *pair))
        return self.exchanges[pair]

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
            "exchanges": {f"{i},{j}": {"rng": e.rng.bit_generator.state, "n_attempts": e.n_attempts, "n_accepted": e.n_accepted}
                          for (i, j), e in self.exchanges.items()},
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
        for key, saved in state.get("exchanges", {}).items():
            exchange = self.exchange_for(tuple(int(k) for k in key.split(",")))
            exchange.rng.bit_generator.state = saved["rng"]
            exchange.n_attempts, exchange.n_accepted = int(saved["n_attempts"]), int(saved["n_accepted"])


def _masses(system):
    return np.array([system.getParticleMass(i).value_in_unit(unit.amu) for i in range(system.getNumParticles())])


def _resolve_device(device):
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def target_temperatures_kelvin(thermodynamic_states, proposal_settings):
    """Conditioning values (K) of the proposal target states that exist among ``thermodynamic_states``: their
    temperatures on a temperature ladder (``conditioning.state_conditioning``)."""
    conditioning = state_conditioning(thermodynamic_states)
    if isinstance(conditioning, str):
        return [thermodynamic_states[int(s)].temperature.value_in_unit(unit.kelvin)
                for s in proposal_settings.target_states if int(s) < len(thermodynamic_states)]
    return [conditioning.kelvin[int(s)] for s in proposal_settings.target_states if int(s) < len(thermodynamic_states)]
