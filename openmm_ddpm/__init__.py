"""openmm_ddpm: exact diffusion-model proposals for OpenMM replica exchange.

A temperature-conditioned diffusion model proposes configurations; each
candidate carries its exact model log-density, and a multiple-try
Metropolis-Hastings rule makes the move leave the Boltzmann distribution
invariant whatever the model's quality (docs/exactness.md).

The package reads like the design (DESIGN.md): ``coordinates`` (positions
<-> features, with exact Jacobians), ``model`` (network, diffusion, trainer,
the model protocol), ``moves`` (the exact proposal move), ``multistate``
(the drop-in samplers, the online learner, checkpoints, storage),
``analysis`` (estimates with error bars), ``app`` (command line, workflows,
plots); ``settings`` is the one settings layer, ``units`` the unit
boundary, ``testsystems`` systems with exactly known answers.
"""
import importlib

from openmm_ddpm._version import __version__

_PUBLIC = {  # name -> the module that defines it; imported on first use, so `import openmm_ddpm` stays light
    "CartesianCoordinates": "openmm_ddpm.coordinates",
    "InternalCoordinates": "openmm_ddpm.coordinates",
    "MoleculeCoordinates": "openmm_ddpm.coordinates",
    "Representation": "openmm_ddpm.coordinates",
    "DiffusionProposalModel": "openmm_ddpm.model",
    "EDMDiffusion": "openmm_ddpm.model",
    "OnlineTrainer": "openmm_ddpm.model",
    "ProposalModel": "openmm_ddpm.model",
    "GenerativeProposal": "openmm_ddpm.moves",
    "StreamingLangevinMove": "openmm_ddpm.moves",
    "TemperatureMixture": "openmm_ddpm.moves",
    "DDPMParallelTemperingSampler": "openmm_ddpm.multistate",
    "DDPMReplicaExchangeSampler": "openmm_ddpm.multistate",
    "DDPMOpenMMReplicaExchangeSampler": "openmm_ddpm.multistate",
    "LoadedRun": "openmm_ddpm.multistate",
    "OnlineLearner": "openmm_ddpm.multistate",
    "export_proposal_model": "openmm_ddpm.multistate",
    "load_exported_model": "openmm_ddpm.multistate",
    "load_run": "openmm_ddpm.multistate",
    "read_ddpm_statistics": "openmm_ddpm.multistate",
    "refine_proposal_model": "openmm_ddpm.multistate",
    "DynamicsSettings": "openmm_ddpm.settings",
    "ModelSettings": "openmm_ddpm.settings",
    "ProposalSettings": "openmm_ddpm.settings",
    "RepresentationSettings": "openmm_ddpm.settings",
    "Settings": "openmm_ddpm.settings",
    "TrainingSettings": "openmm_ddpm.settings",
    "DoubleWell2D": "openmm_ddpm.testsystems",
}
__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'openmm_ddpm' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
