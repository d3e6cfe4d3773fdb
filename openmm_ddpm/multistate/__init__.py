"""Replica exchange with online learning: the openmmtools samplers and what they keep.

``samplers`` holds the drop-in ``DDPMParallelTemperingSampler`` and
``DDPMReplicaExchangeSampler``, the only code that knows every part;
``openmm_sampler`` the same on OpenMM's own ``app.ReplicaExchangeSampler``;
``support`` which runs get proposals;
``learner`` the online learning state (buffer -> trainer -> frozen model);
``buffer`` the replay buffer; ``contexts`` where energies are evaluated;
``checkpoints`` the atomic, hashed,
weights-only checkpoints; ``storage`` reading a run's openmmtools storage
per state; ``runs`` loading, exporting and refining a finished run's
model. May import every library subpackage; never ``openmm_ddpm.app``.
"""
from openmm_ddpm.multistate.learner import OnlineLearner
from openmm_ddpm.multistate.openmm_sampler import DDPMOpenMMReplicaExchangeSampler, IterationStatistics
from openmm_ddpm.multistate.runs import (
                                         LoadedRun,
                                         export_proposal_model,
                                         load_exported_model,
                                         load_run,
                                         refine_proposal_model,
)
from openmm_ddpm.multistate.samplers import (
                                         DDPMParallelTemperingSampler,
                                         DDPMReplicaExchangeSampler,
)
from openmm_ddpm.multistate.storage import (
                                         read_ddpm_statistics,
                                         read_reduced_potentials,
                                         read_state_trajectories,
                                         read_temperatures_kelvin,
)

__all__ = ["DDPMOpenMMReplicaExchangeSampler", "DDPMParallelTemperingSampler", "DDPMReplicaExchangeSampler",
           "IterationStatistics", "LoadedRun", "OnlineLearner",
           "export_proposal_model", "load_exported_model", "load_run", "read_ddpm_statistics",
           "read_reduced_potentials", "read_state_trajectories", "read_temperatures_kelvin", "refine_proposal_model"]
