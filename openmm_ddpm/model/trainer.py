"""Training of the diffusion model, with EMA weights for proposals."""
import copy
import logging
import math

import torch

from openmm_ddpm.model.diffusion import EDMDiffusion
from openmm_ddpm.settings import TrainingSettings

logger = logging.getLogger(__name__)
MIN_BATCH_SIZE = 8  # below this, out of memory in training is an error


class OnlineTrainer:
    """Fits an ``EDMDiffusion`` to (features, temperature) data.

    Parameters
    ----------
    diffusion : EDMDiffusion
        Its network is trained in place.
    settings : openmm_ddpm.settings.TrainingSettings
        Its optimizer fields (batch_size, learning_rate, ema_decay,
        weight_decay, gradient_clip) are used.
    seed : int
        Seeds the minibatch and noise draws.
    """

    def __init__(self, diffusion, settings=TrainingSettings(), seed=0):
        self.diffusion = diffusion
        self.settings = settings
        self.generator = torch.Generator(device=diffusion.device).manual_seed(int(seed))
        self.ema_network = copy.deepcopy(diffusion.network).requires_grad_(False)
        self.optimizer = torch.optim.AdamW(
            diffusion.network.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
        )
        self.n_steps_done = 0
        self.batch_size = int(settings.batch_size)  # halved on out-of-memory errors (``step``)

    def step(self, features, temperatures_kelvin, n_steps):
        """Run n optimizer steps on random minibatches.

        Parameters
        ----------
        features : torch.Tensor, (n, D)
            Standardized features.
        temperatures_kelvin : torch.Tensor, (n,), K
        n_steps : int

        Returns
        -------
        float
            Mean training loss over the steps.
        """
        network = self.diffusion.network.train()
        dtype, device = self.diffusion.dtype, self.diffusion.device
        features = torch.as_tensor(features).to(dtype=dtype, device=device)
        temperatures = torch.as_tensor(temperatures_kelvin).to(dtype=dtype, device=device)
        if features.shape[0] != temperatures.shape[0] or features.shape[0] == 0:
            raise ValueError("need the same, non-zero number of features and temperatures")
        total = 0.0
        for _ in range(int(n_steps)):
            total += self._step_halving_the_batch_on_oom(network, features, temperatures)
            self._update_ema()
        self.n_steps_done += int(n_steps)
        return total / max(int(n_steps), 1)

    def _step_halving_the_batch_on_oom(self, network, features, temperatures):
        """One optimizer step; out of (GPU) memory, the batch is halved for the rest of the run and the step retried."""
        while True:
            try:
                index = torch.randint(features.shape[0], (self.batch_size,), generator=self.generator,
                                      device=features.device)
                loss = self.diffusion.loss(features[index], temperatures[index], generator=self.generator)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(network.parameters(), self.settings.gradient_clip)
                self.optimizer.step()
                return float(loss.detach())
            except torch.OutOfMemoryError as error:
                self.optimizer.zero_grad(set_to_none=True)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                if self.batch_size <= MIN_BATCH_SIZE:
                    raise RuntimeError(f"out of memory in training even at a batch of {self.batch_size}: use a smaller "
                                       "model (model.width, model.depth) or model.device: cpu") from error
                self.batch_size //= 2
                logger.warning(f"out of memory in training: the batch is halved to {self.batch_size} for this run "
                               "(set training.batch_size to keep it)")

    def set_learning_rate(self, learning_rate):
        """Use ``learning_rate`` for the following steps (a schedule's value)."""
        for group in self.optimizer.param_groups:
            group["lr"] = float(learning_rate)

    @torch.no_grad()
    def _update_ema(self):
        decay = self.settings.ema_decay
        for ema, live in zip(self.ema_network.parameters(), self.diffusion.network.parameters()):
            ema.lerp_(live, 1.0 - decay)

    def frozen_diffusion(self, dtype=torch.float64):
        """A detached copy of the EMA model for proposals: frozen, eval mode, float64."""
        network = copy.deepcopy(self.ema_network).to(dtype=dtype).eval().requires_grad_(False)
        return EDMDiffusion(network, self.diffusion.settings)

    def state_dict(self):
        """Network, EMA, optimizer and random state, for a checkpoint."""
        return {
            "network": self.diffusion.network.state_dict(),
            "ema_network": self.ema_network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "n_steps_done": self.n_steps_done,
        }

    def load_state_dict(self, state):
        """Restore what ``state_dict`` saved."""
        self.diffusion.network.load_state_dict(state["network"])
        self.ema_network.load_state_dict(state["ema_network"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.n_steps_done = int(state["n_steps_done"])


def cosine_learning_rate(progress, initial, final):
    """Cosine decay: ``initial`` at progress 0, ``final`` at progress >= 1.

    lr(p) = final + (initial - final) (1 + cos(pi min(p, 1))) / 2 (SGDR,
    Loshchilov & Hutter 2017, without restarts).
    """
    p = min(max(float(progress), 0.0), 1.0)
    return final + (initial - final) * 0.5 * (1.0 + math.cos(math.pi * p))
