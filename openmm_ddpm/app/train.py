"""``openmm-ddpm train STORAGE.nc --pdb STRUCTURE.pdb --out DIR``: a temperature-conditioned model from plain REMD data.

The founding paper's workflow (Wang, Herron & Tiwary 2022): a finished
openmmtools replica-exchange (or parallel-tempering) run, made without
openmm_ddpm, supplies every state's configurations (its analysis particles,
which must be every atom) at every state's temperature; a model is trained
on them offline and exported. The directory it writes is one that
``openmm-ddpm sample`` reads: ``model.pt``, ``config.yaml`` (the settings,
the temperatures, and the System as ``system.xml`` + the PDB), so weighted
samples at any temperature follow, and ``trained_on.json`` (the storage's
path), so ``openmm-ddpm analyze`` reports the plain run beside the model.
"""
import dataclasses
import json
import os
import shutil

from openmm_ddpm.app.config import ConfigError, RunConfig, SystemSpec, default_config
from openmm_ddpm.app.run import CONFIG_NAME, MODEL_NAME, SOURCE_NAME, write_config


@dataclasses.dataclass
class TrainingResult:
    """``frames`` used (all states), ``temperatures_kelvin``, ``steps`` trained, ``final_loss``, ``model_path``."""

    frames: int
    temperatures_kelvin: list
    steps: int
    final_loss: float
    model_path: str


def read_temperature_ladder(storage):
    """(openmm.System, temperatures in K, positions (n, n_states, N, 3) nm) of a temperature-only multistate storage."""
    from openmm import unit
    from openmmtools import multistate

    from openmm_ddpm.multistate.storage import read_state_trajectories

    if not os.path.isfile(storage):
        raise ConfigError(f"storage {storage!r} not found: give the .nc file of an openmmtools multistate run")
    reporter = multistate.MultiStateReporter(storage, open_mode="r")
    try:
        thermodynamic_states, _ = reporter.read_thermodynamic_states()
    finally:
        reporter.close()
    system = thermodynamic_states[0].system
    for state in thermodynamic_states[1:]:
        if not thermodynamic_states[0].is_state_compatible(state) or state.pressure != thermodynamic_states[0].pressure:
            raise ConfigError(f"{storage}: its states differ in more than temperature; train takes a temperature ladder")
    kelvins = [state.temperature.value_in_unit(unit.kelvin) for state in thermodynamic_states]
    try:
        _, positions = read_state_trajectories(storage, first_iteration=1)
    except ValueError:
        raise ConfigError(f"{storage} stores no per-iteration positions: the run needs analysis_particle_indices = "
                          "every atom") from None
    if positions.shape[2] != system.getNumParticles():
        raise ConfigError(f"{storage} stores {positions.shape[2]} of {system.getNumParticles()} atoms per iteration; "
                          "train needs every atom as an analysis particle")
    return system, kelvins, positions


def train_from_storage(storage, pdb, directory, steps=20_000, settings=None, first_iteration=1):
    """Train on a plain run's frames and write a directory that ``openmm-ddpm sample`` reads; returns a ``TrainingResult``.

    Parameters
    ----------
    storage : str
        openmmtools storage of a temperature-ladder run with every atom as analysis particle.
    pdb : str
        The structure the run's System was built from (topology and reference frame).
    directory : str
    steps : int
        Optimizer steps (``OnlineLearner.refine``: cosine decay of the learning rate).
    settings : openmm_ddpm.settings.Settings, optional
        Default: those of the built-in run.
    first_iteration : int
        Iterations before it are left out (equilibration).
    """
    import openmm
    from openmm import app, unit

    from openmm_ddpm.multistate import export_proposal_model
    from openmm_ddpm.multistate.learner import OnlineLearner

    if os.path.exists(os.path.join(directory, MODEL_NAME)):
        raise ConfigError(f"{directory} holds a model already: give another --out")
    if not os.path.isfile(pdb):
        raise ConfigError(f"--pdb {pdb!r} not found: give the structure the run's System was built from")
    system, kelvins, positions = read_temperature_ladder(storage)
    structure = app.PDBFile(pdb)
    if structure.topology.getNumAtoms() != system.getNumParticles():
        raise ConfigError(f"--pdb has {structure.topology.getNumAtoms()} atoms, the run's System "
                          f"{system.getNumParticles()}: give the PDB the System was built from")
    positions = positions[max(first_iteration - 1, 0):]
    settings = settings or default_config().settings
    n_frames = positions.shape[0] * positions.shape[1]
    settings = dataclasses.replace(settings, training=dataclasses.replace(
        settings.training, min_buffer_frames=1, buffer_capacity=max(settings.training.buffer_capacity, n_frames)))
    learner = OnlineLearner(settings, system, structure.positions.value_in_unit(unit.nanometer))
    learner.prepare()
    for k, kelvin in enumerate(kelvins):
        learner.buffer.add(positions[:, k], kelvin)
    learner.train()  # builds the representation and the network on the whole buffer
    loss = learner.refine(int(steps))
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "system.xml"), "w") as stream:
        stream.write(openmm.XmlSerializer.serialize(system))
    shutil.copyfile(pdb, os.path.join(directory, "structure.pdb"))
    model_path = os.path.join(directory, MODEL_NAME)
    export_proposal_model(learner, model_path, len(positions))
    config = RunConfig(system=SystemSpec(xml="system.xml", pdb="structure.pdb"),  # read from the directory
                       temperatures_kelvin=tuple(kelvins), iterations=len(positions), settings=settings)
    write_config(config, os.path.join(directory, CONFIG_NAME))
    with open(os.path.join(directory, SOURCE_NAME), "w") as stream:  # for openmm-ddpm analyze
        json.dump({"storage": os.path.abspath(storage), "first_iteration": max(int(first_iteration), 1)}, stream)
    return TrainingResult(int(len(learner.buffer)), kelvins, learner.trainer.n_steps_done, float(loss), model_path)


__all__ = ["TrainingResult", "read_temperature_ladder", "train_from_storage"]
