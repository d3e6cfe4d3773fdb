"""The settings groups: one frozen dataclass per concern, validated at construction.

``DiffusionSettings`` (the EDM formulation), ``RepresentationSettings``,
``ModelSettings``, ``TrainingSettings``, ``ProposalSettings`` and
``DynamicsSettings``; each converts to and from a plain dict (``to_dict``,
``coerce``), quantities written as strings such as ``"2.0 * femtosecond"``.
"""
from dataclasses import asdict, dataclass, field, fields

from openmm import unit

LEGACY_FIELDS = {"TrainingSettings": {"stream_stride"}, "ProposalSettings": {"seed"}}


def _plain(value):
    """A YAML-safe form: tuples as lists, quantities as strings that ``_quantity`` reads back."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if unit.is_quantity(value):
        name = value.unit.get_name()
        return f"{value._value} {name}" if name.startswith("/") else f"{value._value} * {name}"
    return value


def _quantity(value, expected, name):
    """A Quantity compatible with ``expected`` from a Quantity or a string; a one-line error otherwise."""
    if isinstance(value, str):
        from openmmtools.utils import quantity_from_string

        try:
            value = quantity_from_string(value)
        except Exception:
            raise ValueError(f"{name}: cannot read {value!r} as a quantity; write e.g. '2.0 * femtosecond'") from None
    if not unit.is_quantity(value) or not value.unit.is_compatible(expected):
        raise ValueError(f"{name} must be a quantity in units of {expected.get_name()}, got {value!r}")
    return value


@dataclass(frozen=True)
class DiffusionSettings:
    """Hyperparameters of the EDM formulation and its samplers.

    Attributes
    ----------
    sigma_min : float
        Noise level where the flow stops (standardized units). A larger value
        gives a broader, still exact, proposal (DESIGN.md section 7).
    sigma_max : float
        Standard deviation of the Gaussian prior.
    sigma_data : float
        Data scale for the preconditioning (1 for standardized features).
    rho : float
        Exponent of the Karras noise-level spacing.
    n_steps : int
        Heun steps of the probability-flow map.
    n_sde_steps : int
        Euler-Maruyama steps of the fast stochastic sampler.
    p_mean, p_std : float
        Log-normal distribution of training noise levels.
    inversion_tolerance : float
        Residual (standardized units) at which a step inversion is converged.
    max_fixed_point_iterations : int or None
        Cheap fixed-point iterations before Newton in the step inversion.
        None: 0 for D <= 16 (a Jacobian costs about D forward passes, so
        Newton wins), 10 above.
    max_newton_iterations : int
    """

    sigma_min: float = 0.05
    sigma_max: float = 10.0
    sigma_data: float = 1.0
    rho: float = 7.0
    n_steps: int = 20
    n_sde_steps: int = 200
    p_mean: float = -1.2
    p_std: float = 1.2
    inversion_tolerance: float = 1e-12
    max_fixed_point_iterations: int | None = None
    max_newton_iterations: int = 8

    def __post_init__(self):
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError("need 0 < sigma_min < sigma_max")
        if self.n_steps < 1 or self.n_sde_steps < 1:
            raise ValueError("n_steps and n_sde_steps must be >= 1")



_DIFFUSION = DiffusionSettings()


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
            value = {k: v for k, v in value.items() if k not in LEGACY_FIELDS.get(cls.__name__, ())}
            unknown = set(value) - known
            if unknown:
                raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}; known: {sorted(known)}")
            return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
        raise TypeError(f"expected {cls.__name__}, dict or None, got {type(value).__name__}")


@dataclass(frozen=True)
class RepresentationSettings(_Settings):
    """How positions become model features.

    Attributes
    ----------
    kind : str
        'auto' (default: 'internal' for a System with harmonic bonds, a
        molecule; 'cartesian' otherwise, e.g. the toy systems), 'cartesian',
        or 'internal' (Z-matrix from the System's harmonic bonds; the first
        configuration fixes the chirality).
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

    kind: str = "auto"
    remove_center_of_mass: bool = False
    relative_sibling_torsions: bool = False

    def __post_init__(self):
        if self.kind not in ("auto", "cartesian", "internal"):
            raise ValueError(f"representation kind must be 'auto', 'cartesian' or 'internal', got {self.kind!r}")

    def resolved_kind(self, system):
        """'internal' or 'cartesian' for this System ('auto': internal when it has harmonic bonds or constraints)."""
        if self.kind != "auto":
            return self.kind
        import openmm

        bonds = sum(f.getNumBonds() for f in system.getForces() if isinstance(f, openmm.HarmonicBondForce))
        return "internal" if bonds + system.getNumConstraints() > 0 else "cartesian"


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
    sigma_min: float = _DIFFUSION.sigma_min
    sigma_max: float = _DIFFUSION.sigma_max
    n_steps: int = _DIFFUSION.n_steps
    device: str = "auto"
    temperature_max_frequency: float = 0.25

    def __post_init__(self):
        if min(self.width, self.depth, self.n_steps) < 1:
            raise ValueError("width, depth and n_steps must be >= 1")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        self.diffusion_settings()  # validates the noise range

    def diffusion_settings(self):
        return DiffusionSettings(sigma_min=self.sigma_min, sigma_max=self.sigma_max, n_steps=self.n_steps)


@dataclass(frozen=True)
class TrainingSettings(_Settings):
    """When and how the model learns from the stream, and the optimizer.

    Attributes
    ----------
    train_interval : int
        Iterations between training rounds.
    train_steps : int
        Optimizer steps per round.
    batch_size : int
    learning_rate : float
        AdamW learning rate.
    ema_decay : float
        EMA weights w_ema <- d w_ema + (1 - d) w after every step; proposals use the EMA weights.
    weight_decay : float
        AdamW weight decay.
    gradient_clip : float
        Maximum gradient norm.
    buffer_capacity : int
        Frames kept (oldest dropped first).
    min_buffer_frames : int
        Frames needed before the first training round; the standardization
        is fitted on the buffer at that moment and kept fixed afterwards.
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
        production phase (``OnlineLearner.refine``): the buffer is featurized
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
    weight_decay: float = 0.0
    gradient_clip: float = 1.0
    buffer_capacity: int = 100_000
    min_buffer_frames: int = 500
    target_fraction: float = None
    final_learning_rate: float = None
    refine_steps: int = 0

    def __post_init__(self):
        if self.refine_steps < 0:
            raise ValueError(f"refine_steps must be >= 0, got {self.refine_steps}")
        if min(self.train_interval, self.train_steps, self.batch_size, self.buffer_capacity) < 1:
            raise ValueError("train_interval, train_steps, batch_size and buffer_capacity must be >= 1")
        if not self.learning_rate > 0 or not 0 <= self.ema_decay < 1 or self.weight_decay < 0 or not self.gradient_clip > 0:
            raise ValueError("need learning_rate > 0, 0 <= ema_decay < 1, weight_decay >= 0, gradient_clip > 0")
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
    temperature_factors : tuple of float
        Candidates for a state at T come from the model's conditionals at
        s_k T, mixed (``openmm_ddpm.moves.TemperatureMixture``); (1.0,),
        the default, is the model at T alone. E.g. (1.0, 1.27) lets a
        basin the model learned only from hotter replicas be proposed at
        the lowest temperature. Exact for any factors; costs one encoding
        per factor.
    temperature_factor_weights : tuple of float
        Mixture weights c_k, one per factor (normalized); () for equal.
    exchange_pairs : tuple of (int, int)
        State pairs (i, j) that swap configurations through the model's flow
        map at every proposal round (``openmm_ddpm.moves.MappedExchange``),
        e.g. ((0, 5),) from the lowest to the highest temperature, which plain
        exchange cannot bridge. Exact for any pair; () (default) for none.
    """

    target_states: tuple = (0,)
    propose_interval: int = 1
    n_candidates: int = 8
    min_training_steps: int = 2000
    temperature_factors: tuple = (1.0,)
    temperature_factor_weights: tuple = ()
    exchange_pairs: tuple = ()

    def __post_init__(self):
        pairs = tuple(tuple(int(k) for k in pair) for pair in self.exchange_pairs)
        if any(len(pair) != 2 or pair[0] == pair[1] or min(pair) < 0 for pair in pairs):
            raise ValueError(f"exchange_pairs must be pairs of two different state indices, got {self.exchange_pairs}")
        object.__setattr__(self, "exchange_pairs", pairs)
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


@dataclass(frozen=True)
class DynamicsSettings(_Settings):
    """The default MD move of the samplers (``StreamingLangevinMove``) and what it streams.

    Attributes
    ----------
    timestep : openmm.unit.Quantity (time)
    collision_rate : openmm.unit.Quantity (1 / time)
    n_steps : int
        MD steps per replica and iteration.
    stream_stride : int
        MD steps between frames streamed into the buffer. With a move of
        the user's own (``mcmc_moves``), only the final configuration of
        each iteration is streamed and these settings are unused.
    stream_when_frozen : bool
        Keep streaming every ``stream_stride`` steps once the model is frozen
        for good (default), so the buffer holds the whole run for analysis and
        for refining the model afterwards (``refine_proposal_model``). False:
        the production phase runs each replica's MD in one call and streams
        its last frame only (the same trajectory; saves one openmmtools move
        call, ~0.3 ms for a small molecule, per skipped frame).
    """

    timestep: unit.Quantity = field(default_factory=lambda: 2.0 * unit.femtosecond)
    collision_rate: unit.Quantity = field(default_factory=lambda: 1.0 / unit.picosecond)
    n_steps: int = 500
    stream_stride: int = 50
    stream_when_frozen: bool = True

    def __post_init__(self):
        object.__setattr__(self, "timestep", _quantity(self.timestep, unit.femtosecond, "timestep"))
        object.__setattr__(self, "collision_rate", _quantity(self.collision_rate, unit.picosecond**-1, "collision_rate"))
        if not self.timestep > 0 * unit.femtosecond or not self.collision_rate >= 0 / unit.picosecond:
            raise ValueError(f"need timestep > 0 and collision_rate >= 0, got {self.timestep}, {self.collision_rate}")
        if self.n_steps < 1 or self.stream_stride < 1:
            raise ValueError(f"n_steps and stream_stride must be >= 1, got {self.n_steps}, {self.stream_stride}")


GROUPS = {"representation": RepresentationSettings, "model": ModelSettings, "training": TrainingSettings,
          "proposals": ProposalSettings, "dynamics": DynamicsSettings}


