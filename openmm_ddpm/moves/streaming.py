"""A Langevin move that hands over intermediate frames for online training.

The samplers' default MD move (``DynamicsSettings``): openmmtools'
``LangevinDynamicsMove``, run in chunks so that a frame every
``stream_stride`` steps reaches the replay buffer.
"""
import numpy as np
from openmm import unit
from openmmtools import mcmc


class SeededLangevinDynamicsMove(mcmc.LangevinDynamicsMove):
    """``LangevinDynamicsMove`` whose integrator starts a given random-number stream.

    Parameters
    ----------
    random_seed : int, optional
        Seed of the Langevin integrator's random numbers (1 to 2**31 - 1).
        OpenMM seeds a random-number stream when a Context is created, so
        every Context the move creates starts the same stream. None
        (default): OpenMM picks a fresh seed for each Context.
    **kwargs
        As ``openmmtools.mcmc.LangevinDynamicsMove``.
    """

    def __init__(self, random_seed=None, **kwargs):
        super().__init__(**kwargs)
        if random_seed is not None and not 0 < int(random_seed) < 2**31:
            raise ValueError(f"random_seed must be None or an integer in [1, 2**31), got {random_seed} "
                             "(0 asks OpenMM for a random seed)")
        self.random_seed = None if random_seed is None else int(random_seed)

    def _get_integrator(self, thermodynamic_state):
        integrator = super()._get_integrator(thermodynamic_state)
        if self.random_seed is not None:
            integrator.setRandomNumberSeed(self.random_seed)
        return integrator

    def __getstate__(self):
        serialization = super().__getstate__()
        serialization["random_seed"] = self.random_seed
        return serialization

    def __setstate__(self, serialization):
        serialization = dict(serialization)
        self.random_seed = serialization.pop("random_seed", None)
        super().__setstate__(serialization)


class StreamingLangevinMove(SeededLangevinDynamicsMove):
    """``LangevinDynamicsMove`` that records a frame every ``stream_stride`` steps.

    The ``n_steps`` of one ``apply`` run in chunks of ``stream_stride``
    (velocities are reassigned, if asked, only before the first chunk, so the
    dynamics is the same as one call of ``n_steps``); the positions after each
    chunk are appended to ``streamed_frames`` (nm), which the sampler empties.

    Parameters
    ----------
    stream_stride : int
        MD steps between recorded frames; must divide ``n_steps``.
    random_seed : int, optional
        Seed of the Langevin integrator's random numbers (1 to 2**31 - 1).
        OpenMM seeds a random-number stream when a Context is created, so
        every Context the move creates starts the same stream: the move
        alone, from the same state, repeats its trajectory. The samplers
        set it from the run's seed (``openmm_ddpm.seeding``); a whole run
        then repeats exactly on the Reference platform, and on the CPU
        platform with one thread (tests/test_seeding.py); with several
        threads, or on a GPU, the order of floating-point sums may differ
        between runs, and a chaotic trajectory parts after a while. None
        (default): OpenMM
        picks a fresh seed for each Context.
    **kwargs
        As ``openmmtools.mcmc.LangevinDynamicsMove``.

    Attributes
    ----------
    recording : bool
        True (default): run in chunks and record. False: run the ``n_steps``
        in one call and record nothing (the samplers switch it off once the
        model is frozen for good if ``stream_when_frozen=False``; each chunk
        costs one openmmtools move call, ~0.3 ms for a small molecule on the
        Reference platform). The trajectory is the same either way
        (tests/test_buffer_and_checkpoint.py).
    """

    def __init__(self, stream_stride=50, random_seed=None, **kwargs):
        super().__init__(random_seed=random_seed, **kwargs)
        if stream_stride < 1 or self.n_steps % stream_stride != 0:
            raise ValueError(f"stream_stride ({stream_stride}) must be >= 1 and divide n_steps ({self.n_steps})")
        self.stream_stride = int(stream_stride)
        self.streamed_frames = []
        self.recording = True

    def apply(self, thermodynamic_state, sampler_state, context_cache=None):
        if not self.recording:
            super().apply(thermodynamic_state, sampler_state, context_cache)
            return
        n_steps, reassign = self.n_steps, self.reassign_velocities
        try:
            self.n_steps = self.stream_stride
            for _ in range(n_steps // self.stream_stride):
                super().apply(thermodynamic_state, sampler_state, context_cache)
                self.reassign_velocities = False
                self.streamed_frames.append(np.array(sampler_state.positions.value_in_unit(unit.nanometer)))
        finally:
            self.n_steps, self.reassign_velocities = n_steps, reassign

    def pop_frames(self):
        """Return the recorded frames (n, n_atoms, 3) nm and forget them."""
        frames, self.streamed_frames = self.streamed_frames, []
        return np.array(frames)

    def __getstate__(self):
        serialization = super().__getstate__()
        serialization["stream_stride"] = self.stream_stride
        return serialization

    def __setstate__(self, serialization):
        serialization = dict(serialization)
        self.stream_stride = serialization.pop("stream_stride")
        super().__setstate__(serialization)
        self.streamed_frames = []
        self.recording = True
