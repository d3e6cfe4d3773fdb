"""``openmm-ddpm run``: an augmented replica-exchange run whose directory holds everything it makes.

The directory: ``config.yaml`` (the resolved configuration, with the
package version), ``run.nc`` (openmmtools storage, with the model
checkpoints beside it), ``run.log`` and, at the end, ``model.pt`` (the
frozen proposal model, ``openmm_ddpm.load_exported_model``). Running again
on the same directory with the same configuration resumes where the
storage's last checkpoint left off (a larger ``iterations`` extends the
run); a different configuration is refused, so nothing is overwritten. A
storage left unreadable by a kill inside one of its writes is restored from
its newest snapshot (``openmm_ddpm.multistate.snapshots``).
"""
import contextlib
import io
import logging
import os
import time
from dataclasses import dataclass

import openmm
import yaml
from openmm import app, unit

from openmm_ddpm._version import __version__
from openmm_ddpm.app.config import ConfigError, parse_config

CONFIG_NAME, STORAGE_NAME, LOG_NAME, MODEL_NAME = "config.yaml", "run.nc", "run.log", "model.pt"
SOURCE_NAME = "trained_on.json"  # written by ``openmm-ddpm train``: the plain run's storage and first iteration
ANALYSIS_ATOMS = 1000  # systems up to this size store every atom's position every iteration (openmmtools' analysis particles)
logger = logging.getLogger(__name__)
SMALL_SYSTEM_ATOMS = 100  # below this, OpenMM's Reference platform beats CPU and GPU on one core (measured: 22 atoms)


@dataclass
class RunResult:
    """What a run left behind and how it went.

    Attributes
    ----------
    directory : str
    iterations : int
        Iterations in storage at the end.
    resumed_from : int
        Iteration the run started from (0 for a new run).
    wall_seconds : float
        Time of this invocation, s.
    production_acceptance : float
        Accepted / proposed moves in the production phase of this invocation (NaN if none).
    model_path : str or None
        The exported model, if the model was trained.
    plain_reason : str or None
        Why the run was plain replica exchange (no training or proposals), or None.
    """

    directory: str
    iterations: int
    resumed_from: int
    wall_seconds: float
    production_acceptance: float
    model_path: str
    plain_reason: str = None


def build_system(spec):
    """(openmm.System, positions Quantity, openmm.app.Topology) of a ``SystemSpec``."""
    constraints = app.HBonds if spec.constraints == "hbonds" else None
    if spec.builtin is not None:
        from openmmtools import testsystems

        factory = {"alanine_dipeptide_vacuum": testsystems.AlanineDipeptideVacuum,
                   "alanine_dipeptide_implicit": testsystems.AlanineDipeptideImplicit}[spec.builtin]
        molecule = factory(constraints=constraints)
        return molecule.system, molecule.positions, molecule.topology
    if spec.prmtop is not None:
        prmtop, inpcrd = app.AmberPrmtopFile(spec.prmtop), app.AmberInpcrdFile(spec.inpcrd)
        periodic = inpcrd.boxVectors is not None
        system = prmtop.createSystem(nonbondedMethod=app.PME if periodic else app.NoCutoff, constraints=constraints)
        if periodic:
            system.setDefaultPeriodicBoxVectors(*inpcrd.boxVectors)
        return system, inpcrd.positions, prmtop.topology
    pdb = app.PDBFile(spec.pdb)
    if spec.xml is not None:
        with open(spec.xml) as stream:
            system = openmm.XmlSerializer.deserialize(stream.read())
        if system.getNumParticles() != pdb.topology.getNumAtoms():
            raise ConfigError(f"system.xml has {system.getNumParticles()} particles but system.pdb "
                              f"{pdb.topology.getNumAtoms()} atoms: give the PDB the System was built from")
        return system, pdb.positions, pdb.topology
    try:
        forcefield = app.ForceField(*spec.forcefield)
        periodic = pdb.topology.getPeriodicBoxVectors() is not None
        system = forcefield.createSystem(pdb.topology, nonbondedMethod=app.PME if periodic else app.NoCutoff,
                                         constraints=constraints)
    except (ValueError, OSError) as error:
        raise ConfigError(f"system.forcefield: {str(error).splitlines()[0]}") from None
    return system, pdb.positions, pdb.topology


def analysis_atoms(system, topology):
    """The atoms whose positions the storage keeps every iteration: all of them up to ``ANALYSIS_ATOMS``, beyond it a
    solvated System's solute (what ``openmm-ddpm train`` reads), else none."""
    from openmm_ddpm.coordinates.solute import is_solvated, solute_atoms

    n_atoms = system.getNumParticles()
    if n_atoms <= ANALYSIS_ATOMS:
        return list(range(n_atoms))
    return solute_atoms(topology) if is_solvated(system, topology) else []


def choose_platform(name, system):
    """The OpenMM platform for ``name``; 'auto': Reference for a small molecule in vacuum, else CUDA, OpenCL or CPU.

    Measured on alanine dipeptide (22 atoms, one core): Reference is the
    fastest in vacuum, CPU with implicit solvent.
    """
    available = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    if name == "auto":
        implicit = any("GB" in type(force).__name__ for force in system.getForces())
        small = system.getNumParticles() < SMALL_SYSTEM_ATOMS and not implicit
        order = ("Reference",) if small else ("CUDA", "OpenCL", "CPU", "Reference")
        name = next(candidate for candidate in order if candidate in available)
    if name not in available:
        raise ConfigError(f"platform {name!r} is not available here (OpenMM has {', '.join(available)}): choose another")
    return openmm.Platform.getPlatformByName(name)


def check_torch_device(device):
    """A one-line error when ``settings.model.device`` names a CUDA device torch cannot use here."""
    import torch

    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise ConfigError(f"settings.model.device {device!r}: torch sees no such CUDA device here "
                              f"({torch.cuda.device_count()} found): set device: auto (or cpu)")


def set_aside_if_killed_before_its_first_checkpoint(storage):
    """A storage that cannot be read and has no snapshot yet (killed while it was created, or before the first
    checkpoint) holds nothing to resume: rename its files to ``*.unreadable`` so the run starts again."""
    from openmm_ddpm.multistate.snapshots import newest_snapshot, storage_files, storage_is_readable

    if newest_snapshot(storage)[0] is not None or storage_is_readable(storage):  # a snapshot: from_storage decides
        return
    for path in storage_files(storage):
        os.replace(path, path + ".unreadable")
    logger.warning(f"{storage} could not be read and has no snapshot (killed before its first checkpoint): "
                   "set aside as *.unreadable; the run starts again")


def write_config(config, path):
    """The resolved configuration as YAML, headed by the package version."""
    with open(path, "w") as stream:
        stream.write(f"# openmm-ddpm {__version__}: the resolved configuration of this run\n")
        yaml.safe_dump(config.to_dict(), stream, sort_keys=False)


def check_same_run(config, directory):
    """Refuse a directory whose run was made with another configuration (``iterations`` may differ)."""
    with open(os.path.join(directory, CONFIG_NAME)) as stream:
        stored = parse_config(yaml.safe_load(stream), base=directory).to_dict()
    new = config.to_dict()
    for key in new:
        if key != "iterations" and stored.get(key) != new[key]:
            raise ConfigError(f"{directory} holds a run with another {key!r}: give another --out for a new run, "
                              "or the same configuration to resume it")


def run(config=None, directory="openmm_ddpm_run", progress=True):
    """Run (or resume) the augmented sampler for ``config`` in ``directory``; returns a ``RunResult``.

    Parameters
    ----------
    config : RunConfig, optional
        Default: the built-in run (``openmm_ddpm.app.config.default_config``).
    directory : str
    progress : bool
        Show a progress bar (tqdm) with phase, acceptance, loss and time left.
    """
    from openmmtools import cache, multistate, states

    from openmm_ddpm.multistate import DDPMParallelTemperingSampler, export_proposal_model

    config = config or parse_config({})
    os.makedirs(directory, exist_ok=True)
    storage, config_path = os.path.join(directory, STORAGE_NAME), os.path.join(directory, CONFIG_NAME)
    system, positions, topology = build_system(config.system)
    cache.global_context_cache.empty()  # a platform is set on an empty cache only (a second run in one process)
    cache.global_context_cache.set_platform(choose_platform(config.platform, system))
    check_torch_device(config.settings.model.device)
    handler = _log_to(os.path.join(directory, LOG_NAME))
    try:
        if os.path.exists(storage) and not os.path.exists(config_path):
            raise ConfigError(f"{storage} exists without {CONFIG_NAME}: not an openmm-ddpm run; give another --out")
        if os.path.exists(storage):
            check_same_run(config, directory)
            set_aside_if_killed_before_its_first_checkpoint(storage)
        citations = io.StringIO()  # openmmtools prints what to cite: into run.log, not over the progress bar
        if os.path.exists(storage):
            with contextlib.redirect_stdout(citations):
                sampler = DDPMParallelTemperingSampler.from_storage(storage)  # restores a snapshot if it must
        else:
            write_config(config, config_path)
            sampler = DDPMParallelTemperingSampler(number_of_iterations=config.iterations, online_analysis_interval=None,
                                                   settings=config.settings)
            reporter = multistate.MultiStateReporter(storage, checkpoint_interval=config.checkpoint_interval,
                                                     analysis_particle_indices=analysis_atoms(system, topology))
            kelvins = [t * unit.kelvin for t in config.temperatures_kelvin]
            box = system.getDefaultPeriodicBoxVectors() if system.usesPeriodicBoundaryConditions() else None
            with contextlib.redirect_stdout(citations):
                sampler.create(states.ThermodynamicState(system, kelvins[0]), states.SamplerState(positions, box_vectors=box),
                               reporter, temperatures=kelvins, n_temperatures=len(kelvins))
        if citations.getvalue().strip():
            logger.info("openmmtools: " + " ".join(citations.getvalue().split()))
        result = _iterate(sampler, config.iterations, progress)
        if sampler.learner is not None and sampler.learner.trainer is not None:
            result.model_path = os.path.join(directory, MODEL_NAME)
            export_proposal_model(sampler.learner, result.model_path, sampler.iteration)
        result.directory = directory
        sampler._reporter.close()
        return result
    finally:
        logging.getLogger("openmm_ddpm").removeHandler(handler)
        handler.close()


def _iterate(sampler, n_iterations, progress):
    """Run to ``n_iterations``, one iteration at a time, with a progress bar; the counts of this invocation."""
    from tqdm import tqdm

    start_iteration, start = sampler.iteration, time.perf_counter()
    sampler.number_of_iterations = max(sampler.number_of_iterations, n_iterations)  # a resumed run may be extended
    accepted = proposed = 0
    bar = tqdm(total=n_iterations, initial=start_iteration, unit="it", disable=not progress, dynamic_ncols=True)
    while sampler.iteration < n_iterations:
        sampler.run(1)
        statistics = sampler.last_iteration_statistics
        production = statistics.get("ddpm_phase") == 1
        if production and statistics.get("ddpm_n_candidates", 0) > 0:
            proposed += len(sampler.settings.proposals.target_states)
            accepted += statistics["ddpm_n_accepted"]
        loss = statistics.get("ddpm_training_loss", float("nan"))
        phase = "plain RE" if sampler.plain_reason is not None else "production" if production else "learning"
        bar.set_postfix(phase=phase,
                        acceptance=f"{accepted / proposed:.2f}" if proposed else "-",
                        loss=f"{loss:.3f}" if loss == loss else "-", refresh=False)
        bar.update(1)
    bar.close()
    return RunResult("", sampler.iteration, start_iteration, time.perf_counter() - start,
                     accepted / proposed if proposed else float("nan"), None, sampler.plain_reason)


def _log_to(path):
    """Send the package's log (INFO and up) to ``path`` as well."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    package_logger = logging.getLogger("openmm_ddpm")
    package_logger.addHandler(handler)
    package_logger.setLevel(min(package_logger.level or logging.INFO, logging.INFO))
    return handler


__all__ = ["RunResult", "build_system", "choose_platform", "run"]
