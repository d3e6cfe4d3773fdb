"""The generative model: network, diffusion, training, and the model as a proposal sees it.

``networks`` holds the denoiser conditioned on noise level and temperature;
``diffusion`` the EDM loss, samplers and the probability-flow map with its
exact log-density; ``trainer`` the optimizer steps, EMA weights and frozen
float64 copies; ``proposal_model`` wraps a frozen diffusion and a
representation into positions in nm with exact log q; ``protocol`` writes
down what a proposal move needs of any model. May import
``openmm_ddpm.settings``, ``openmm_ddpm.units`` and
``openmm_ddpm.coordinates``; never the moves, samplers or application.
"""
from openmm_ddpm.model.diffusion import EDMDiffusion
from openmm_ddpm.model.networks import ConditionedMLP
from openmm_ddpm.model.proposal_model import DiffusionProposalModel
from openmm_ddpm.model.protocol import (
           FusedProposalModel,
           ProposalModel,
           RelabellingModel,
)
from openmm_ddpm.model.trainer import OnlineTrainer, cosine_learning_rate

__all__ = ["ConditionedMLP", "DiffusionProposalModel", "EDMDiffusion", "FusedProposalModel", "OnlineTrainer",
           "ProposalModel", "RelabellingModel", "cosine_learning_rate"]
