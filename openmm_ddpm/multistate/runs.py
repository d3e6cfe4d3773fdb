"""A finished run's model: loading, exporting, refining.

``load_run`` rebuilds the learning state of a run's newest intact
checkpoint (``LoadedRun``); ``export_proposal_model`` writes the proposal
model alone to a small weights-only file and ``load_exported_model``
reads it back for the System it was trained on; ``refine_proposal_model``
trains a finished run's model longer on its whole buffer.

The online model sees each streamed frame only a few times; a model trained
longer on the same frames is what reweighting at temperatures the run never
simulated needs (benchmarks/results/alanine_dipeptide_long_training_*.json).
In a new run, the training setting ``refine_steps`` does this at the freeze,
before the production phase. A model refined after the run has seen
production-phase frames, so it is not the model the run's chain used; it
serves reweighting and generation (importance sampling is consistent for
any proposal density that covers the target), never a retroactive change
of the run's proposals.
"""
import dataclasses
import os

import torch

from openmm_ddpm._version import __version__
from openmm_ddpm.multistate.checkpoints import (
    first_line,
    load_verified,
    newest_intact_checkpoint,
    run_directory_of,
    save_atomic,
)
from openmm_ddpm.multistate.conditioning import TEMPERATURE, state_conditioning
from openmm_ddpm.multistate.learner import OnlineLearner, target_temperatures_kelvin
from openmm_ddpm.settings import GROUPS, Settings


@dataclasses.dataclass
class LoadedRun:
    """The learning state of a run's newest intact checkpoint.

    Attributes
    ----------
    model : openmm_ddpm.model.DiffusionProposalModel
        The frozen float64 EMA model, as the run's proposals used it.
    learner : OnlineLearner
        The whole learning state (buffer, trainer, proposal statistics).
    iteration : int
        Iteration of the checkpoint.
    settings : openmm_ddpm.settings.Settings
    thermodynamic_states : list of openmmtools.states.ThermodynamicState
    """

    model: object
    learner: OnlineLearner
    iteration: int
    settings: Settings
    thermodynamic_states: list


def load_run(storage):
    """The learning state of a DDPM sampler run's newest intact checkpoint, for analysis and generation.

    Parameters
    ----------
    storage : str
        openmmtools storage file of a DDPM sampler run.

    Returns
    -------
    LoadedRun
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
    settings = Settings.from_dict({name: options.get(name) for name in (*GROUPS, "freeze_after", "seed")})
    conditioning = state_conditioning(thermodynamic_states)
    learner = OnlineLearner(settings, thermodynamic_states[0].system, state["reference_positions"].numpy(),
                            target_temperatures_kelvin(thermodynamic_states, settings.proposals),
                            conditioning=TEMPERATURE if isinstance(conditioning, str) else conditioning.kind)
    learner.load_state_dict(state)
    return LoadedRun(learner.proposal_model, learner, iteration, settings, thermodynamic_states)


def export_proposal_model(learner, path, iteration):
    """Write the proposal model of a learning state to a small file.

    Keeps what scoring and generation need, without the buffer, optimizer
    or statistics: settings, standardization, torsion and rotor windows,
    reference structure and EMA weights (weights only, no code; load with
    ``load_exported_model``). For a finished run:
    ``run = load_run(storage)`` first, then ``run.learner``. Pass the
    live state (``sampler.learner``) while the sampler still holds its
    storage open: opening the storage a second time in the same process
    is what HDF5 does not survive.

    Parameters
    ----------
    learner : OnlineLearner
        A trained learning state (``sampler.learner``, or ``load_run(storage).learner``).
    path : str
    iteration : int
        Iteration the state belongs to (recorded).

    Returns
    -------
    str
        SHA-256 of the written file.
    """
    if learner.trainer is None:
        raise ValueError("nothing to export: the model has not been trained yet")
    state = {
        "package_version": __version__, "iteration": int(iteration),
        "settings": {name: getattr(learner.settings, name).to_dict() for name in GROUPS},
        "reference_positions": torch.as_tensor(learner.reference_positions),
        "conditioning": learner.conditioning_kind,  # absent in older files: temperature
        "ema_network": {name: value.detach().cpu() for name, value in learner.trainer.ema_network.state_dict().items()},
        **learner._representation_state(),
    }  # CPU tensors: a model trained on a GPU loads anywhere
    sidecar = path + ".sha256"  # checked by load_exported_model; never left naming another file's hash
    if os.path.exists(sidecar):
        os.unlink(sidecar)
    digest = save_atomic(state, path)
    with open(sidecar + ".tmp", "w") as stream:
        stream.write(digest + "\n")
    os.replace(sidecar + ".tmp", sidecar)
    return digest


def load_exported_model(path, system, expected_sha256=None, device="cpu"):
    """The proposal model of ``export_proposal_model``, for the System it was trained on.

    Parameters
    ----------
    path : str
    system : openmm.System
        Rotor symmetry is verified on it again.
    expected_sha256 : str, optional
        Refuse the file if its hash differs.
    device : str, optional
        Where the network runs: 'cpu' (default), 'cuda', 'cuda:N' or 'auto'
        (as ``ModelSettings.device``). Coordinates and energies stay on the CPU.

    Returns
    -------
    openmm_ddpm.model.DiffusionProposalModel
        Frozen, float64.
    """
    if expected_sha256 is None and os.path.exists(path + ".sha256"):
        with open(path + ".sha256") as stream:
            expected_sha256 = stream.read().strip()
    state = load_verified(path, expected_sha256)
    check_exported_state(state, path, system)
    settings = Settings.from_dict({name: state["settings"].get(name) for name in GROUPS})
    settings = dataclasses.replace(settings, model=dataclasses.replace(settings.model, device=device))
    learner = OnlineLearner(settings, system, state["reference_positions"].numpy(),
                            conditioning=state.get("conditioning", TEMPERATURE))
    try:
        learner._rebuild_model(state)
        learner.trainer.ema_network.load_state_dict(state["ema_network"])
    except (ValueError, RuntimeError) as error:  # features or weights of another System or representation
        raise ValueError(f"{path} does not fit this System ({first_line(error)}): give the System it was trained on, "
                         "with the same constraints") from error
    learner.refresh_proposal_model()
    return learner.proposal_model


EXPORTED_KEYS = ("package_version", "settings", "reference_positions", "ema_network", "standardizer")


def check_exported_state(state, path, system):
    """One-line errors for an exported model that is not one, is from a newer version, or fits another System."""
    missing = [key for key in EXPORTED_KEYS if key not in state]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}: not a model of export_proposal_model; "
                         "export it again (openmm_ddpm.export_proposal_model)")
    written = tuple(int(part) for part in str(state["package_version"]).split(".")[:2] if part.isdigit())
    if written > tuple(int(part) for part in __version__.split(".")[:2]):
        raise ValueError(f"{path} was written by openmm_ddpm {state['package_version']}, newer than this "
                         f"{__version__}: upgrade openmm_ddpm to read it")
    n_atoms = len(state["reference_positions"])
    if n_atoms != system.getNumParticles():
        raise ValueError(f"{path} was trained on a System of {n_atoms} particles, this one has "
                         f"{system.getNumParticles()}: give the System the model was trained on")


def refine_proposal_model(storage, n_steps, output):
    """Train a finished run's model ``n_steps`` more steps on its whole buffer and export it.

    Parameters
    ----------
    storage : str
        openmmtools storage file of a DDPM sampler run (its newest intact
        checkpoint supplies the model, optimizer and buffer).
    n_steps : int
        Optimizer steps (``OnlineLearner.refine``: cosine decay of the learning
        rate from the run's ``learning_rate`` to its ``final_learning_rate``).
        Runs on the device of the run's model settings ('auto': CUDA if
        present).
    output : str
        Model file to write (``export_proposal_model`` format; load it with
        ``load_exported_model``).

    Returns
    -------
    model : openmm_ddpm.model.DiffusionProposalModel
        The refined, frozen float64 model.
    sha256 : str
        SHA-256 of ``output``.
    """
    if int(n_steps) < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    run = load_run(storage)
    run.learner.refine(int(n_steps))  # logs its progress
    return run.learner.proposal_model, export_proposal_model(run.learner, output, run.iteration)
