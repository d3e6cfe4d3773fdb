"""openmm_ddpm: exact diffusion-model proposals for OpenMM replica exchange.

A temperature-conditioned diffusion model proposes configurations; each
candidate carries its exact model log-density, and a multiple-try
Metropolis-Hastings rule makes the move leave the Boltzmann distribution invariant
whatever the model's quality (see docs/exactness.md).
"""

__version__ = "0.2.0"
