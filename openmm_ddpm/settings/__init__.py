"""The one settings layer of the package: frozen dataclasses, validated at construction.

Every group has the same defaults wherever it is used (sampler, learner,
trainer, exported models, the command line). ``to_dict``/``coerce`` convert
to and from plain dicts (quantities as strings such as ``"2.0 *
femtosecond"``), which openmmtools stores as YAML in the run's storage, so
a resumed run rebuilds exactly the settings it was started with;
``groups`` holds the dataclasses, ``bundle`` the ``Settings`` of a whole
run with YAML input and output. Imports nothing else of the package.
"""
from openmm_ddpm.settings.bundle import Settings
from openmm_ddpm.settings.groups import (GROUPS, LEGACY_FIELDS, DiffusionSettings, DynamicsSettings, ModelSettings,
                                         ProposalSettings, RepresentationSettings, TrainingSettings)

__all__ = ["GROUPS", "LEGACY_FIELDS", "DiffusionSettings", "DynamicsSettings", "ModelSettings", "ProposalSettings",
           "RepresentationSettings", "Settings", "TrainingSettings"]
