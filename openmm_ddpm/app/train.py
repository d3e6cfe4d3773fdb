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

A solvated run (a periodic System, or one with water) gives a solute-only
model: it trains on the solute's coordinates (every molecule that is not
water or an ion; the run must store them, as analysis particles or all
atoms) and its System is the solute alone in vacuum
(``coordinates.solute``). Its samples cannot be reweighted to the solvated
ensemble (the water is not in the model): ``sample`` and ``analyze`` say
so and report them as drawn, with the model's error. States can be held
out of training (``held_out_states``) to measure that error against the
run at a temperature the model never saw.
"""
import dataclasses
import json
import os

import numpy as np

from openmm_ddpm.app.config import ConfigError, RunConfig, SystemSpec, default_config
from openmm_ddpm.app.run import CONFIG_NAME, MODEL_NAME, SOURCE_NAME, write_config


@dataclasses.dataclass
class TrainingResult:
    """``frames`` used (all states), ``temperatures_kelvin``, ``steps`` trained, ``final_loss``, ``model_path``,
    ``solute_atoms`` (None, or the System's atoms a solute-only model covers)."""

    frames: int
    temperatures_kelvin: list
    steps: int
    final_loss: float
    model_path: str
    solute_atoms: list = None


@dataclasses.dataclass
class Ladder:
    """A temperature-ladder storage: the ``system``, ``temperatures_kelvin``, per-iteration ``positions``
    (n, n_states, n_stored, 3) nm from iteration 1 and the System's atoms stored (``stored_atoms``)."""

    system: object
    temperatures_kelvin: list
    positions: np.ndarray
    stored_atoms: np.ndarray


def read_temperature_ladder(storage):
    """The ``Ladder`` of a temperature-only multistate storage."""
    from openmm import unit
    from openmmtools import multistate

    from openmm_ddpm.multistate.storage import read_state_trajectories

    if not os.path.isfile(storage):
        raise ConfigError(f"storage {storage!r} not found: give the .nc file of an openmmtools multistate run")
    reporter = multistate.MultiStateReporter(storage, open_mode="r")
    try:
        thermodynamic_states, _ = reporter.read_thermodynamic_states()
        stored_atoms = np.asarray(reporter.analysis_particle_indices, dtype=int)
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
                          "every atom (or, in solvent, the solute's atoms)") from None
    if len(stored_atoms) != positions.shape[2]:
        stored_atoms = np.arange(positions.shape[2])
    return Ladder(system, kelvins, positions, stored_atoms)


def training_frames(ladder, topology):
    """(System of the model, its atoms' columns in ``ladder.positions``, solute atoms or None) for a Topology.

    Dry: every atom, all of which the storage must hold. Solvated: the
    solute alone (``solute_system``), whose atoms the storage must hold.
    """
    from openmm_ddpm.coordinates.solute import is_solvated, solute_atoms, solute_system

    n_atoms = ladder.system.getNumParticles()
    position_of = {int(atom): column for column, atom in enumerate(ladder.stored_atoms)}
    if not is_solvated(ladder.system, topology):
        if len(ladder.stored_atoms) != n_atoms:
            raise ConfigError(f"the storage holds {len(ladder.stored_atoms)} of {n_atoms} atoms per iteration; "
                              "train needs every atom as an analysis particle")
        return ladder.system, np.arange(n_atoms), None
    atoms = solute_atoms(topology)
    if not atoms:
        raise ConfigError("the System is solvated but has no solute (every molecule is water or an ion): nothing to train")
    missing = [atom for atom in atoms if atom not in position_of]
    if missing:
        raise ConfigError(f"the storage does not hold solute atom(s) {missing[:5]} per iteration: run with "
                          "analysis_particle_indices = the solute's atoms (or every atom)")
    try:
        system = solute_system(ladder.system, atoms)
    except ValueError as error:
        raise ConfigError(f"--pdb: {error}") from None
    return system, np.array([position_of[atom] for atom in atoms]), atoms


def train_from_storage(storage, pdb, directory, steps=20_000, settings=None, first_iteration=1, held_out_states=()):
    """Train on a plain run's frames and write a directory that ``openmm-ddpm sample`` reads; returns a ``TrainingResult``.

    Parameters
    ----------
    storage : str
        openmmtools storage of a temperature-ladder run with every atom as analysis particle
        (a solvated run: the solute's atoms, or every atom).
    pdb : str
        The structure the run's System was built from (topology and reference frame).
    directory : str
    steps : int
        Optimizer steps (``OnlineLearner.refine``: cosine decay of the learning rate).
    settings : openmm_ddpm.settings.Settings, optional
        Default: those of the built-in run.
    first_iteration : int
        Iterations before it are left out (equilibration).
    held_out_states : sequence of int
        States whose frames are left out of training (to measure the model's error there).
    """
    from openmm import app, unit

    from openmm_ddpm.multistate.learner import OnlineLearner

    if os.path.exists(os.path.join(directory, MODEL_NAME)):
        raise ConfigError(f"{directory} holds a model already: give another --out")
    if not os.path.isfile(pdb):
        raise ConfigError(f"--pdb {pdb!r} not found: give the structure the run's System was built from")
    ladder = read_temperature_ladder(storage)
    structure = app.PDBFile(pdb)
    if structure.topology.getNumAtoms() != ladder.system.getNumParticles():
        raise ConfigError(f"--pdb has {structure.topology.getNumAtoms()} atoms, the run's System "
                          f"{ladder.system.getNumParticles()}: give the PDB the System was built from")
    held_out = sorted({int(k) for k in held_out_states})
    if any(k < 0 or k >= len(ladder.temperatures_kelvin) for k in held_out) or len(held_out) >= len(ladder.temperatures_kelvin):
        raise ConfigError(f"--hold-out {held_out}: give state indices 0-{len(ladder.temperatures_kelvin) - 1}, "
                          "leaving at least one to train on")
    system, columns, solute = training_frames(ladder, structure.topology)
    positions = ladder.positions[max(first_iteration - 1, 0):][:, :, columns]
    reference = structure.positions.value_in_unit(unit.nanometer)
    reference = np.asarray(reference if solute is None else [reference[atom] for atom in solute])
    settings = settings or default_config().settings
    n_frames = positions.shape[0] * positions.shape[1]
    settings = dataclasses.replace(settings, training=dataclasses.replace(
        settings.training, min_buffer_frames=1, buffer_capacity=max(settings.training.buffer_capacity, n_frames)))
    learner = OnlineLearner(settings, system, reference)
    learner.prepare()
    for k, kelvin in enumerate(ladder.temperatures_kelvin):
        if k not in held_out:
            learner.buffer.add(positions[:, k], kelvin)
    learner.train()  # builds the representation and the network on the whole buffer
    loss = learner.refine(int(steps))
    model_path = write_trained_directory(directory, learner, system, structure, solute, ladder, len(positions))
    with open(os.path.join(directory, SOURCE_NAME), "w") as stream:  # for openmm-ddpm analyze and sample
        json.dump({"storage": os.path.abspath(storage), "first_iteration": max(int(first_iteration), 1),
                   "held_out_states": held_out, "solute_atoms": solute,
                   "solute_columns": None if solute is None else columns.tolist()}, stream)
    return TrainingResult(int(len(learner.buffer)), ladder.temperatures_kelvin, learner.trainer.n_steps_done,
                          float(loss), model_path, solute)


def write_trained_directory(directory, learner, system, structure, solute, ladder, n_iterations):
    """model.pt, system.xml, structure.pdb (the solute's alone for a solute model) and config.yaml; the model's path."""
    import openmm
    from openmm import app

    from openmm_ddpm.multistate import export_proposal_model

    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "system.xml"), "w") as stream:
        stream.write(openmm.XmlSerializer.serialize(system))
    modeller = app.Modeller(structure.topology, structure.positions)
    if solute is not None:
        kept = set(solute)
        modeller.delete([atom for atom in modeller.topology.atoms() if atom.index not in kept])
    with open(os.path.join(directory, "structure.pdb"), "w") as stream:
        app.PDBFile.writeFile(modeller.topology, modeller.positions, stream)
    model_path = os.path.join(directory, MODEL_NAME)
    export_proposal_model(learner, model_path, n_iterations)
    config = RunConfig(system=SystemSpec(xml="system.xml", pdb="structure.pdb"),  # read from the directory
                       temperatures_kelvin=tuple(ladder.temperatures_kelvin), iterations=n_iterations,
                       settings=learner.settings)
    write_config(config, os.path.join(directory, CONFIG_NAME))
    return model_path


def solute_columns(directory):
    """The stored columns of a solute-only model's atoms (list of int), or None for a model of every atom."""
    path = os.path.join(directory, SOURCE_NAME)
    if not os.path.exists(path):
        return None
    with open(path) as stream:
        return json.load(stream).get("solute_columns")


__all__ = ["Ladder", "TrainingResult", "read_temperature_ladder", "solute_columns", "train_from_storage", "training_frames"]
