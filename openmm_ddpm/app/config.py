"""The YAML file of an ``openmm-ddpm run``: the system, the temperature ladder, the length, the platform, the settings.

::

    system:
      builtin: alanine_dipeptide_vacuum   # or alanine_dipeptide_implicit; or one of:
      # pdb: input.pdb
      # forcefield: [amber14-all.xml, implicit/obc2.xml]
      # prmtop: input.prmtop
      # inpcrd: input.inpcrd
      # xml: system.xml                  # a serialized openmm.System; positions from pdb:
      constraints: none                  # none or hbonds (builtin, pdb, prmtop)
    temperatures: {min: 300 K, max: 1000 K, n: 6}   # geometric; or a list: [300 K, 400 K, ...]
    iterations: 4000
    platform: auto                       # auto, Reference, CPU, CUDA or OpenCL
    checkpoint_interval: 50
    settings:                            # openmm_ddpm.settings.Settings: representation, model,
      freeze_after: 2000                 # training, proposals, dynamics, freeze_after, seed
      seed: 0

Every mistake is a ``ConfigError`` whose one line names the key and the fix.
"""
import os
import re
from dataclasses import dataclass, field

import numpy as np
import yaml
from openmm import unit

from openmm_ddpm.settings import Settings

BUILTINS = ("alanine_dipeptide_vacuum", "alanine_dipeptide_implicit")
PLATFORMS = ("auto", "Reference", "CPU", "CUDA", "OpenCL")
SYSTEM_KEYS = ("builtin", "pdb", "forcefield", "prmtop", "inpcrd", "xml", "constraints")
TOP_KEYS = ("system", "temperatures", "iterations", "platform", "checkpoint_interval", "settings")


class ConfigError(ValueError):
    """A mistake in a run's configuration; its message is one line that names the key and the fix."""


@dataclass(frozen=True)
class SystemSpec:
    """Where the System and its starting positions come from (one of builtin, pdb + forcefield, prmtop + inpcrd, xml + pdb)."""

    builtin: str = None
    pdb: str = None
    forcefield: tuple = ()
    prmtop: str = None
    inpcrd: str = None
    xml: str = None
    constraints: str = "none"


@dataclass(frozen=True)
class RunConfig:
    """A whole run: ``system``, ``temperatures_kelvin`` (ascending), ``iterations``, ``platform``, ``settings``."""

    system: SystemSpec = field(default_factory=lambda: SystemSpec(builtin="alanine_dipeptide_vacuum"))
    temperatures_kelvin: tuple = tuple(float(t) for t in np.geomspace(300.0, 1000.0, 6))
    iterations: int = 4000
    platform: str = "auto"
    checkpoint_interval: int = 50
    settings: Settings = field(default_factory=Settings)

    def to_dict(self):
        """Plain YAML-safe dict that ``parse_config`` reads back to the same config."""
        spec = {key: getattr(self.system, key) for key in SYSTEM_KEYS if getattr(self.system, key) not in (None, ())}
        spec["forcefield"] = list(self.system.forcefield) if self.system.forcefield else None
        if self.system.xml is not None:  # a serialized System carries its own constraints
            spec.pop("constraints", None)
        return {"system": {k: v for k, v in spec.items() if v is not None},
                "temperatures": [f"{float(t)!r} K" for t in self.temperatures_kelvin], "iterations": self.iterations,
                "platform": self.platform, "checkpoint_interval": self.checkpoint_interval,
                "settings": self.settings.to_dict()}


def default_config():
    """The built-in run: alanine dipeptide in vacuum, 6 replicas 300-1000 K, the measured budget shape (~10 min, one core)."""
    settings = Settings.from_dict({
        "representation": {"kind": "internal"},
        "model": {"width": 128, "depth": 2, "n_steps": 10, "sigma_min": 0.02},
        "training": {"train_steps": 25, "min_buffer_frames": 12_000, "buffer_capacity": 400_000},
        "proposals": {"target_states": [0], "n_candidates": 8, "min_training_steps": 10_000, "propose_interval": 4},
        "dynamics": {"timestep": "1.0 * femtosecond", "collision_rate": "1.0 / picosecond", "n_steps": 500,
                     "stream_stride": 250},
        "freeze_after": 2000, "seed": 0})
    return RunConfig(settings=settings)


def load_config(path=None):
    """The run configuration in the YAML file ``path``, or the built-in default when ``path`` is None."""
    if path is None:
        return default_config()
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} not found: give the path of a YAML file, or none for the built-in run")
    with open(path) as stream:
        try:
            values = yaml.safe_load(stream)
        except yaml.YAMLError as error:
            raise ConfigError(f"{path} is not valid YAML ({str(error).splitlines()[0]}): fix the syntax") from None
    return parse_config(values or {}, base=os.path.dirname(os.path.abspath(path)))


def parse_config(values, base="."):
    """A ``RunConfig`` from a dict; relative file names are read from ``base``; keys left out keep the built-in default."""
    _check_keys(values, TOP_KEYS, "the config", "")
    default = default_config()
    return RunConfig(
        system=parse_system(values["system"], base) if "system" in values else default.system,
        temperatures_kelvin=parse_temperatures(values["temperatures"]) if "temperatures" in values
        else default.temperatures_kelvin,
        iterations=_positive_int(values.get("iterations", default.iterations), "iterations"),
        platform=parse_platform(values.get("platform", default.platform)),
        checkpoint_interval=_positive_int(values.get("checkpoint_interval", default.checkpoint_interval),
                                          "checkpoint_interval"),
        settings=parse_settings(values["settings"]) if "settings" in values else default.settings)


def parse_system(values, base="."):
    """``SystemSpec`` from the ``system`` mapping; files must exist."""
    _check_keys(values, SYSTEM_KEYS, "system", "system.")
    constraints = str(values.get("constraints", "none")).lower()
    if constraints not in ("none", "hbonds"):
        raise ConfigError(f"system.constraints must be none or hbonds, got {values['constraints']!r}")
    sources = [key for key in ("builtin", "prmtop", "xml") if key in values] or (["pdb"] if "pdb" in values else [])
    if len(sources) != 1:
        raise ConfigError("system needs exactly one of builtin, pdb (+ forcefield), prmtop (+ inpcrd) or xml (+ pdb), "
                          f"got {sorted(values) or 'none'}")
    if "builtin" in values and values["builtin"] not in BUILTINS:
        raise ConfigError(f"system.builtin {values['builtin']!r} is not built in: choose one of {', '.join(BUILTINS)}")
    source = sources[0]
    needs = {"pdb": ("forcefield",), "prmtop": ("inpcrd",), "xml": ("pdb",)}.get(source, ())
    for key in needs:
        if key not in values:
            raise ConfigError(f"system.{source} needs system.{key} too")
    allowed = {source, *needs} | ({"constraints"} if source != "xml" else set())
    extra = sorted(set(values) - allowed)
    if extra:
        raise ConfigError(f"system.{extra[0]} does not go with system.{source}: remove it "
                          f"(with {source}: {', '.join(sorted(allowed))})")
    files = {key: _existing(values[key], f"system.{key}", base) for key in ("pdb", "prmtop", "inpcrd", "xml") if key in values}
    forcefield = values.get("forcefield", ())
    forcefield = tuple([forcefield] if isinstance(forcefield, str) else forcefield)
    return SystemSpec(builtin=values.get("builtin"), forcefield=forcefield, constraints=constraints, **files)


def parse_temperatures(values):
    """Ascending, distinct temperatures in K from a list of quantities or {min, max, n} (geometric)."""
    if isinstance(values, dict):
        unknown = sorted(set(values) - {"min", "max", "n"})
        if unknown or not {"min", "max", "n"} <= set(values):
            raise ConfigError("temperatures as a mapping needs exactly min, max and n, e.g. {min: 300 K, max: 1000 K, n: 6}")
        n = _positive_int(values["n"], "temperatures.n")
        low, high = (_kelvin(values[key], f"temperatures.{key}") for key in ("min", "max"))
        if n < 2 or not high > low:
            raise ConfigError(f"temperatures need n >= 2 and max > min, got n={n}, min={low} K, max={high} K")
        kelvins = np.geomspace(low, high, n)
    elif isinstance(values, (list, tuple)):
        kelvins = np.array([_kelvin(value, f"temperatures[{i}]") for i, value in enumerate(values)])
        if len(kelvins) < 2:
            raise ConfigError("temperatures need at least two states for replica exchange")
        if np.any(np.diff(kelvins) <= 0):
            raise ConfigError(f"temperatures must be ascending and distinct (the first is the target), got {kelvins.tolist()} K")
    else:
        raise ConfigError(f"temperatures must be a list such as [300 K, 400 K] or {{min, max, n}}, got {values!r}")
    return tuple(float(k) for k in kelvins)


def parse_platform(value):
    if value not in PLATFORMS:
        raise ConfigError(f"platform {value!r} is not one of {', '.join(PLATFORMS)}")
    return value


def parse_settings(values):
    """``Settings`` from the ``settings`` mapping (a subset of its groups)."""
    try:
        return Settings.from_dict(values)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"settings: {str(error).splitlines()[0]}") from None


def _check_keys(values, known, name, prefix):
    """A mapping whose keys are all in ``known``; else a one-line ``ConfigError`` naming the first stranger."""
    if not isinstance(values, dict):
        raise ConfigError(f"{name} must be a mapping of keys {', '.join(known)}, got {values!r}")
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown key {prefix}{unknown[0]}: the keys are {', '.join(known)}")


def _kelvin(value, name):
    """A temperature in K from '300 K', '300 * kelvin' or a Quantity; a bare number is refused."""
    if isinstance(value, str):
        text = value.strip()
        short = re.fullmatch(r"([-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)\s*K", text)
        text = f"{short.group(1)} * kelvin" if short else text
        from openmmtools.utils import quantity_from_string

        try:
            value = quantity_from_string(text)
        except Exception:
            raise ConfigError(f"{name}: cannot read {value!r} as a temperature; write e.g. '300 K'") from None
    if not unit.is_quantity(value) or not value.unit.is_compatible(unit.kelvin):
        raise ConfigError(f"{name} needs a unit: write e.g. '300 K', got {value!r}")
    kelvin = float(value.value_in_unit(unit.kelvin))
    if not kelvin > 0:
        raise ConfigError(f"{name} must be above 0 K, got {kelvin} K")
    return kelvin


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def _existing(path, name, base):
    full = path if os.path.isabs(path) else os.path.join(base, path)
    if not os.path.isfile(full):
        raise ConfigError(f"{name}: file {path!r} not found (relative paths are read from the config's folder)")
    return full
