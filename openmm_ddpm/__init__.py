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
from openmm_ddpm._version import __version__
from openmm_ddpm.coordinates import (
                                    CartesianCoordinates,
                                    InternalCoordinates,
                                    MoleculeCoordinates,
                                    Representation,
)
from openmm_ddpm.model import (
                                    DiffusionProposalModel,
                                    EDMDiffusion,
                                    OnlineTrainer,
                                    ProposalModel,
)
from openmm_ddpm.moves import (
                                    GenerativeProposal,
                                    StreamingLangevinMove,
                                    TemperatureMixture,
)
from openmm_ddpm.multistate import (
                                    DDPMParallelTemperingSampler,
                                    DDPMReplicaExchangeSampler,
                                    LoadedRun,
                                    OnlineLearner,
                                    export_proposal_model,
                                    load_exported_model,
                                    load_run,
                                    read_ddpm_statistics,
                                    refine_proposal_model,
)
from openmm_ddpm.settings import (
                                    DynamicsSettings,
                                    ModelSettings,
                                    ProposalSettings,
                                    RepresentationSettings,
                                    Settings,
                                    TrainingSettings,
)
from openmm_ddpm.testsystems import DoubleWell2D

__all__ = ["CartesianCoordinates", "DDPMParallelTemperingSampler", "DDPMReplicaExchangeSampler", "DiffusionProposalModel",
           "DoubleWell2D", "DynamicsSettings", "EDMDiffusion", "GenerativeProposal", "InternalCoordinates", "LoadedRun",
           "ModelSettings", "MoleculeCoordinates", "OnlineLearner", "OnlineTrainer", "ProposalModel", "ProposalSettings",
           "Representation", "RepresentationSettings", "Settings", "StreamingLangevinMove", "TemperatureMixture",
           "TrainingSettings", "__version__", "export_proposal_model", "load_exported_model", "load_run",
           "read_ddpm_statistics", "refine_proposal_model"]
