"""All settings groups of a run in one object, read from and written to YAML."""
from dataclasses import dataclass, field

import yaml

from openmm_ddpm.settings.groups import (
    GROUPS,
    DynamicsSettings,
    ModelSettings,
    ProposalSettings,
    RepresentationSettings,
    TrainingSettings,
)


@dataclass(frozen=True)
class Settings:
    """Every settings group of a run, with YAML input and output.

    Attributes
    ----------
    representation, model, training, proposals, dynamics
        One group each (``GROUPS``); a dict or None in the constructor is
        coerced to the group's dataclass.
    freeze_after : int or None
        Iteration after which the model is frozen for good (production
        phase); None: never, the whole run is adaptive.
    seed : int
        The run's one seed: every random stream (initial weights, training,
        proposals, Langevin dynamics, replica mixing) is spawned from it
        (``openmm_ddpm.seeding``).
    """

    representation: RepresentationSettings = field(default_factory=RepresentationSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    proposals: ProposalSettings = field(default_factory=ProposalSettings)
    dynamics: DynamicsSettings = field(default_factory=DynamicsSettings)
    freeze_after: int = None
    seed: int = 0

    def __post_init__(self):
        for name, cls in GROUPS.items():
            object.__setattr__(self, name, cls.coerce(getattr(self, name)))
        if self.freeze_after is not None and (isinstance(self.freeze_after, bool) or int(self.freeze_after) < 0):
            raise ValueError(f"freeze_after must be an iteration >= 0 or None, got {self.freeze_after}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")

    def to_dict(self):
        """Plain dict of every group (YAML-safe)."""
        return {**{name: getattr(self, name).to_dict() for name in GROUPS}, "freeze_after": self.freeze_after,
                "seed": self.seed}

    @classmethod
    def from_dict(cls, values):
        """From ``to_dict``'s form, or any subset of it; unknown keys are refused, naming the known ones."""
        values = {key: value for key, value in dict(values or {}).items() if value is not None}
        unknown = set(values) - set(GROUPS) - {"freeze_after", "seed"}
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}; known: {sorted(GROUPS) + ['freeze_after', 'seed']}")
        legacy_seed = (values.get("proposals") or {}).get("seed") if isinstance(values.get("proposals"), dict) else None
        if "seed" not in values and legacy_seed is not None:  # runs of version < 0.3 kept the seed with the proposals
            values["seed"] = legacy_seed
        return cls(**values)

    def to_yaml(self, path=None):
        """The settings as YAML text; written to ``path`` too if given."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            with open(path, "w") as stream:
                stream.write(text)
        return text

    @classmethod
    def from_yaml(cls, path):
        """Read settings from a YAML file (any subset of the groups; the rest keep their defaults)."""
        with open(path) as stream:
            return cls.from_dict(yaml.safe_load(stream))
