"""Settings of the augmented replica-exchange sampler.

Each group is a frozen dataclass; ``to_dict``/``coerce`` convert to and
from the plain dicts that openmmtools stores as YAML in the run's storage,
so a resumed run rebuilds exactly the settings it was started with.
"""
from dataclasses import asdict, dataclass, fields

from openmm_ddpm.diffusion import DiffusionSettings


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


class _Settings:
    """Mixin: conversion to a YAML-safe dict and back."""

    def to_dict(self):
        return {key: _plain(value) for key, value in asdict(self).items()}

    @classmethod
    def coerce(cls, value):
        """Accept an instance, a dict of its fields, or None (defaults)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            known = {f.name for f in fields(cls)}
            unknown = set(value) - known
            if unknown:
                raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
            return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
        raise TypeError(f"expected {cls.__name__}, dict or None, got {type(value).__name__}")


@dataclass(frozen=True)
class RepresentationSettings(_Settings):
    """How positions become model features.

    Attributes
    ----------
    kind : str
        'cartesian', or 'internal' (Z-matrix from the System's harmonic
        bonds; for molecules; the first configuration fixes the chirality).
    remove_center_of_mass : bool
        Cartesian only: True for isolated molecules, False for systems in an
        external field.
    relative_sibling_torsions : bool
        Internal only: torsions of an atom's further substituents relative
        to its first (``InternalCoordinates``). Off by default: on alanine
        dipeptide it gave no higher acceptance and more than twice the
        candidates outside the domain (benchmarks/results/
        alanine_dipeptide_offline_B_abs_cosine.json against _C_cosine.json).
    """

    kind: str = "cartesian"
    remove_center_of_mass: bool = False
    relative_sibling_torsions: bool = False

    def __post_init__(self):
        if self.kind not in ("cartesian", "internal"):
            raise ValueError(f"representation kind must be 'cartesian' or 'internal', got {self.kind!r}")


@dataclass(frozen=True)
class ModelSettings(_Settings):
    """Network size, the diffusion's noise range and the flow map.

    Attributes
    ----------
    width, depth : int
        Residual MLP size.
    sigma_min, sigma_max : float
        Noise range (standardized units).
    n_steps : int
        Heun steps of the proposal's flow map.
    device : str
        'auto' (CUDA if available), 'cpu' or 'cuda'.
    temperature_max_frequency : float
        Highest frequency of the temperature embedding (``ConditionedMLP``),
        cycles per doubling of T. 0.25 (default) interpolates smoothly
        between the ladder's temperatures; 2.0 (the default before version
        0.2, still what a checkpoint of such a run holds) gave an ESS of
        0.6 % instead of 20 % at a never-simulated 381.7 K for the same
        acceptance at 300 K (benchmarks/results/alanine_dipeptide_offline_B2_*
        and _G_*).
    """

    width: int = 128
    depth: int = 3
    sigma_min: float = 0.05
    sigma_max: float = 10.0
    n_steps: int = 20
    device: str = "auto"
    temperature_max_frequency: float = 0.25

    def diffusion_settings(self):
        return DiffusionSettings(sigma_min=self.sigma_min, sigma_max=self.sigma_max, n_steps=self.n_steps)


@dataclass(frozen=True)
class OnlineTrainingSettings(_Settings):
    """When and how the model learns from the stream.

    Attributes
    ----------
    train_interval : int
        Iterations between training rounds.
    train_steps : int
        Optimizer steps per round.
    batch_size : int
    learning_rate : float
    ema_decay : float
    buffer_capacity : int
        Frames kept (oldest dropped first).
    min_buffer_frames : int
        Frames needed before the first training round; the standardization
        is fitted on the buffer at that moment and kept fixed afterwards.
    stream_stride : int
        MD steps between frames streamed into the buffer by the default move.
    target_fraction : float or None
        Share of the training frames drawn from the temperatures of the
        proposal target states (the rest from all others), so the model
        spends its capacity where it proposes; None (default) trains on
        the buffer as streamed (every state equally). Changes only what the
        model learns, never the exactness of a move.
    final_learning_rate : float or None
        Learning rate reached at the freeze (``freeze_after``): a cosine
        decay from ``learning_rate`` over the adaptive phase, so the frozen
        weights sit in a minimum instead of on the noise of a constant
        step. None (default) keeps the rate constant; ignored without
        ``freeze_after``.
    refine_steps : int
        Optimizer steps on the whole buffer at the freeze, before the
        production phase (``OnlineDDPM.refine``): the buffer is featurized
        once and the learning rate restarts from ``learning_rate`` with a
        cosine decay over these steps. Online rounds see each frame a few
        times while the stream grows; this lets the frozen model fit
        every frame streamed before the freeze (alanine dipeptide: 100k
        steps raised the expected MH acceptance at 300 K from 0.53 to
        0.59). 0 (default): none. Exact either way: the frozen model
        depends only on the run's past at the freeze.
    """

    train_interval: int = 1
    train_steps: int = 50
    batch_size: int = 256
    learning_rate: float = 1e-3
    ema_decay: float = 0.995
    buffer_capacity: int = 100_000
    min_buffer_frames: int = 500
    stream_stride: int = 50
    target_fraction: float = None
    final_learning_rate: float = None
    refine_steps: int = 0

    def __post_init__(self):
        if self.refine_steps < 0:
            raise ValueError(f"refine_steps must be >= 0, got {self.refine_steps}")
        if min(self.train_interval, self.train_steps, self.batch_size, self.buffer_capacity, self.stream_stride) < 1:
            raise ValueError("intervals, steps, sizes and stride must be >= 1")
        if self.target_fraction is not None and not 0.0 < self.target_fraction <= 1.0:
            raise ValueError(f"target_fraction must be in (0, 1] or None, got {self.target_fraction}")
        if self.final_learning_rate is not None and not 0.0 < self.final_learning_rate <= self.learning_rate:
            raise ValueError(f"final_learning_rate must be in (0, learning_rate] or None, got {self.final_learning_rate}")


@dataclass(frozen=True)
class ProposalSettings(_Settings):
    """Where, how often and how the model's candidates enter the run.

    Attributes
    ----------
    target_states : tuple of int
        Thermodynamic state indices that receive proposals (default: the
        lowest temperature, state 0).
    propose_interval : int
        Iterations between proposal rounds.
    n_candidates : int
        K of the multiple-try move (1: independence Metropolis-Hastings).
    min_training_steps : int
        Optimizer steps the model must have had before the first proposal,
        so an untrained model never proposes by accident. Once the model is
        frozen (``freeze_after``) it proposes regardless, with a warning if
        it froze before reaching this count.
    seed : int
        Seed of the network's initial weights, of training minibatches and of every proposal's randomness.
    temperature_factors : tuple of float
        Candidates for a state at T come from the model's conditionals at
        s_k T, mixed (``openmm_ddpm.mixture.TemperatureMixture``); (1.0,),
        the default, is the model at T alone. E.g. (1.0, 1.27) lets a
        basin the model learned only from hotter replicas be proposed at
        the lowest temperature. Exact for any factors; costs one encoding
        per factor.
    temperature_factor_weights : tuple of float
        Mixture weights c_k, one per factor (normalized); () for equal.
    """

    target_states: tuple = (0,)
    propose_interval: int = 1
    n_candidates: int = 8
    min_training_steps: int = 2000
    seed: int = 0
    temperature_factors: tuple = (1.0,)
    temperature_factor_weights: tuple = ()

    def __post_init__(self):
        if self.propose_interval < 1 or self.n_candidates < 1 or self.min_training_steps < 0:
            raise ValueError("propose_interval and n_candidates must be >= 1, min_training_steps >= 0")
        if not self.target_states or any(int(s) < 0 for s in self.target_states):
            raise ValueError("target_states must be a non-empty sequence of state indices")
        if not self.temperature_factors or any(not float(s) > 0 for s in self.temperature_factors):
            raise ValueError(f"temperature_factors must be positive numbers, got {self.temperature_factors}")
        if self.temperature_factor_weights and (
                len(self.temperature_factor_weights) != len(self.temperature_factors)
                or any(not float(c) > 0 for c in self.temperature_factor_weights)):
            raise ValueError("temperature_factor_weights: one positive weight per temperature factor, or () for equal")
