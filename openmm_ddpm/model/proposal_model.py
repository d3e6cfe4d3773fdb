"""The trained model as the proposal sees it: positions in nm, exact log q.

``DiffusionProposalModel`` wraps a (frozen) ``EDMDiffusion`` and a
``Representation`` into the protocol of ``GenerativeProposal`` (``protocol.py``):

- ``sample(n, temperature, generator=None, reference_positions=None)``
  -> (positions (n, N, 3) float64 nm, log_q (n,))
- ``log_prob(positions, temperature)`` -> log_q (n,)

Both densities are over the same coordinates as the reduced potential:
the representation's features plus, where the representation keeps a
frame (centre of mass, rigid-body frame), the slice at the reference
configuration's frame. With symmetric atom groups (rotors) the returned
value is log q + log n(z), so that exp(-u - log_prob) are the weights of
the target pi/n on the relabelled space (coordinates/symmetry.py). A candidate's log q is computed by the very same
function as the current state's (``log_prob``), so the two are consistent
by construction; NaN marks a point outside the proposal's support.
"""
import numpy as np
import torch

from openmm_ddpm.coordinates.cartesian import as_positions_tensor
from openmm_ddpm.units import temperature_kelvin


class DiffusionProposalModel:
    """Exact-density proposals from a diffusion model over a representation.

    Parameters
    ----------
    diffusion : openmm_ddpm.model.EDMDiffusion
        Used as is: pass a frozen float64 copy (``OnlineTrainer.frozen_diffusion``)
        so the model cannot change during a move.
    representation : openmm_ddpm.coordinates.Representation
    conditioning : str
        What the ``temperature`` arguments mean: ``"temperature"`` (default), or ``"ladder position"``
        for a model of a ladder of states at one temperature (``multistate.conditioning``), whose
        conditioning values are not temperatures to weigh at.
    """

    def __init__(self, diffusion, representation, conditioning="temperature"):
        if diffusion.n_features != representation.n_features:
            raise ValueError(
                f"model has {diffusion.n_features} features, representation {representation.n_features}"
            )
        self.diffusion = diffusion
        self.representation = representation
        self.conditioning = str(conditioning)

    def sample(self, n, temperature, generator=None, reference_positions=None, score_on_the_way_out=False):
        """Draw n candidates at a temperature with their exact log q.

        Parameters
        ----------
        n : int
        temperature : openmm.unit.Quantity
        generator : torch.Generator, optional
        reference_positions : array_like (N, 3), nm, optional
            Configuration whose frame the candidates keep (needed only by
            representations with a frame).
        score_on_the_way_out : bool
            False (default, what proposals use): score the drawn positions
            with ``log_prob``, the very function that scores a current state.
            True: accumulate log q along the forward pass instead (one
            Jacobian per step, no inversion; several times faster). Both
            are the exact density of the same map and agree to the encoding
            tolerance (~1e-9); meant for analysis and generation.

        Returns
        -------
        positions : numpy.ndarray, (n, N, 3), float64, nm
        log_q : numpy.ndarray, (n,)
        """
        if score_on_the_way_out:
            return self._draw_and_score_forward(n, temperature, generator, reference_positions)
        positions, valid = self.draw(n, temperature, generator, reference_positions)
        log_q = self.log_prob(positions, temperature)
        log_q[~valid] = np.nan
        return positions, log_q

    def _draw_and_score_forward(self, n, temperature, generator, reference_positions):
        """Positions and log q accumulated along the flow map (log q_z - log|dx/dz| + log n)."""
        flow = self.diffusion.sample_flow(n, temperature_kelvin(temperature), generator=generator, with_log_prob=True)
        frame = self._frame(n, reference_positions)
        positions, logdet_inverse, valid = self.representation.inverse(flow.x.to(dtype=torch.float64, device="cpu"), frame)
        coordinates = self.representation.coordinates
        log_q = flow.log_prob.to(torch.float64).cpu() - logdet_inverse.cpu() + coordinates.log_multiplicity(positions).cpu()
        valid = valid.cpu() & coordinates.valid_positions(positions).cpu() & torch.isfinite(log_q)
        return positions.detach().cpu().numpy(), torch.where(valid, log_q, torch.nan).numpy().copy()

    def draw(self, n, temperature, generator=None, reference_positions=None):
        """Candidates without their density: positions (n, N, 3) nm through the flow map, and their domain mask.

        Returns
        -------
        positions : numpy.ndarray, (n, N, 3), float64, nm
        valid : numpy.ndarray of bool, (n,)
            False for draws outside the representation's domain (weight 0).
        """
        flow = self.diffusion.sample_flow(n, temperature_kelvin(temperature), generator=generator, with_log_prob=False)
        frame = self._frame(n, reference_positions)
        positions, _, valid = self.representation.inverse(flow.x.to(dtype=torch.float64, device="cpu"), frame)
        return positions.detach().cpu().numpy(), valid.cpu().numpy()

    def sample_and_score(self, n, temperature, current_positions, generator=None):
        """Candidates, their log q, and the current state's log q in one batch.

        The fused form of ``sample`` + ``log_prob(current)`` that
        ``GenerativeProposal`` uses when a model offers it: the current
        configuration is encoded in the same batch as the candidates, which
        halves the cost of a move. Values are those of ``log_prob``.

        Parameters
        ----------
        n : int
        temperature : openmm.unit.Quantity
        current_positions : array_like, (N, 3), nm
        generator : torch.Generator, optional

        Returns
        -------
        candidates : numpy.ndarray, (n, N, 3), nm
        log_q_candidates : numpy.ndarray, (n,)
        log_q_current : float
        """
        candidates, valid = self.draw(n, temperature, generator, current_positions)
        current = as_positions_tensor(current_positions).numpy()
        log_q = self.log_prob(np.concatenate([current, candidates]), temperature)
        log_q_candidates = log_q[1:]
        log_q_candidates[~valid] = np.nan
        return candidates, log_q_candidates, float(log_q[0])

    def log_prob(self, positions, temperature):
        """Exact log q of configurations (NaN outside the support).

        Parameters
        ----------
        positions : array_like, (n, N, 3) or (N, 3), nm
        temperature : openmm.unit.Quantity

        Returns
        -------
        numpy.ndarray, (n,)
        """
        return self._encode(positions, temperature)[1]

    def _encode(self, positions, temperature):
        """(encoding, log q as ``log_prob`` returns it) of positions (n, N, 3) nm at a temperature."""
        positions = as_positions_tensor(positions)
        features, logdet = self.representation.forward(positions)
        encoding = self.diffusion.encode(features, temperature_kelvin(temperature))
        log_q = encoding.log_prob.to(torch.float64).cpu() + logdet.cpu()
        coordinates = self.representation.coordinates
        log_q = log_q + coordinates.log_multiplicity(positions).cpu()
        valid = coordinates.valid_positions(positions).cpu() & torch.isfinite(log_q)
        return encoding, torch.where(valid, log_q, torch.nan).numpy().copy()

    def map_temperature(self, positions, from_temperature, to_temperature, reference_positions=None):
        """Push configurations through the flow map from one temperature to another: Phi_to o Phi_from^-1.

        The map is a bijection of the model's features with
        |det dM / dx| = q(x | from) / q(M(x) | to), which is what makes the
        mapped replica exchange exact (``openmm_ddpm.moves.mapped_exchange``).

        Parameters
        ----------
        positions : array_like, (n, N, 3), nm
        from_temperature, to_temperature : openmm.unit.Quantity
        reference_positions : array_like, (n, N, 3) or (N, 3), nm, optional
            Configurations whose frame the mapped ones take (representations
            with a frame); default: each keeps its own.

        Returns
        -------
        mapped : numpy.ndarray, (n, N, 3), nm
        valid : numpy.ndarray of bool, (n,)
            False where the input is outside the support or the image outside the domain.
        log_q : numpy.ndarray, (n,)
            ``log_prob(positions, from_temperature)``, from the same encoding.
        """
        positions = as_positions_tensor(positions)
        encoding, log_q = self._encode(positions, from_temperature)
        flow = self.diffusion.decode(encoding.latent, temperature_kelvin(to_temperature), with_log_prob=False)
        reference = positions if reference_positions is None else as_positions_tensor(reference_positions)
        frame = self.representation.frame(reference).expand(len(positions), -1)
        latent_ok = encoding.converged.cpu() & torch.isfinite(encoding.latent).all(-1).cpu()
        x = torch.where(latent_ok.unsqueeze(-1), flow.x.to(dtype=torch.float64, device="cpu"), torch.nan)
        mapped, _, valid = self.representation.inverse(x, frame)
        valid = valid.cpu() & latent_ok & torch.from_numpy(np.isfinite(log_q))
        return mapped.detach().cpu().numpy(), valid.numpy(), log_q

    def relabel(self, positions, rng):
        """Random valid relabelling of symmetric atom groups (identity without any).

        Parameters
        ----------
        positions : array_like, (n, N, 3), nm
        rng : numpy.random.Generator

        Returns
        -------
        numpy.ndarray, (n, N, 3), nm
        """
        return self.representation.coordinates.relabel(as_positions_tensor(positions), rng).numpy()

    def generate(self, n, temperature, generator=None, reference_positions=None):
        """Fast unweighted samples (stochastic sampler; no densities).

        Returns positions, numpy.ndarray (n, N, 3), nm.
        """
        kelvin = temperature_kelvin(temperature)
        x = self.diffusion.sample_sde(n, kelvin, generator=generator)
        positions, _, _ = self.representation.inverse(x.to(dtype=torch.float64, device="cpu"), self._frame(n, reference_positions))
        return positions.detach().cpu().numpy()

    def _frame(self, n, reference_positions):
        coordinates = self.representation.coordinates
        if reference_positions is None:
            if self.representation.frame(torch.zeros(1, coordinates.n_atoms, 3)).shape[-1] > 0:
                raise ValueError("this representation keeps a frame: pass reference_positions")
            return None
        frame = self.representation.frame(as_positions_tensor(reference_positions))
        return frame.expand(n, *frame.shape[1:])
