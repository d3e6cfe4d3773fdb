"""The one settings layer: defaults shared everywhere, validation with one-line errors, YAML round trips."""
import dataclasses

import pytest
from openmm import unit

from openmm_ddpm.model.networks import ConditionedMLP
from openmm_ddpm.settings import (DiffusionSettings, DynamicsSettings, ModelSettings, ProposalSettings, RepresentationSettings,
                                  Settings, TrainingSettings)
from openmm_ddpm.testsystems import DoubleWell2D


def test_the_same_defaults_everywhere():
    model, diffusion = ModelSettings(), DiffusionSettings()
    assert (model.sigma_min, model.sigma_max, model.n_steps) == (diffusion.sigma_min, diffusion.sigma_max, diffusion.n_steps)
    assert model.diffusion_settings() == dataclasses.replace(diffusion, n_steps=model.n_steps)
    network = ConditionedMLP(3)
    assert network.config()["temperature_max_frequency"] == pytest.approx(model.temperature_max_frequency)
    assert (network.config()["width"], len(network.blocks)) == (model.width, model.depth)
    assert "stream_stride" not in {f.name for f in dataclasses.fields(TrainingSettings)}  # one place: DynamicsSettings


def test_yaml_round_trip_with_quantities(tmp_path):
    settings = Settings(dynamics=DynamicsSettings(timestep=1.5 * unit.femtosecond, collision_rate=2.0 / unit.picosecond),
                        proposals=dict(target_states=(0, 2), temperature_factors=(1.0, 1.27), exchange_pairs=((0, 2),)),
                        freeze_after=300, seed=7)
    path = tmp_path / "run.yaml"
    settings.to_yaml(path)
    assert "1.5 * femtosecond" in path.read_text()
    again = Settings.from_yaml(path)
    assert again == settings
    assert again.dynamics.timestep.value_in_unit(unit.femtosecond) == pytest.approx(1.5)
    partial = tmp_path / "partial.yaml"
    partial.write_text("training:\n  train_steps: 7\ndynamics:\n  timestep: 0.002 * picosecond\n")
    loaded = Settings.from_yaml(partial)
    assert loaded.training.train_steps == 7 and loaded.model == ModelSettings()
    assert loaded.dynamics.timestep.value_in_unit(unit.femtosecond) == pytest.approx(2.0)


@pytest.mark.parametrize("make, message", [
    (lambda: Settings.from_dict({"trainig": {}}), "unknown settings"),
    (lambda: TrainingSettings.coerce({"train_step": 3}), "known:"),
    (lambda: DynamicsSettings(timestep=2.0), "units of femtosecond"),
    (lambda: DynamicsSettings(timestep=2.0 * unit.kelvin), "units of femtosecond"),
    (lambda: DynamicsSettings(timestep="2 fs"), "write e.g."),
    (lambda: DynamicsSettings(stream_stride=0), "stream_stride"),
    (lambda: ModelSettings(device="tpu"), "device"),
    (lambda: ModelSettings(sigma_min=20.0), "sigma_min < sigma_max"),
    (lambda: RepresentationSettings(kind="polar"), "representation kind"),
    (lambda: ProposalSettings(n_candidates=0), "n_candidates"),
    (lambda: ProposalSettings(exchange_pairs=((0, 0),)), "exchange_pairs"),
    (lambda: ProposalSettings(exchange_pairs=((0, 1, 2),)), "exchange_pairs"),
    (lambda: Settings(freeze_after=-1), "freeze_after"),
    (lambda: Settings(seed=-3), "seed"),
])
def test_bad_settings_give_one_line_errors_naming_the_setting(make, message):
    with pytest.raises(ValueError, match=message) as error:
        make()
    assert "\n" not in str(error.value)


def test_settings_of_runs_before_version_0_3_still_load():
    """Older storage kept stream_stride with training and the seed with the proposals."""
    settings = Settings.from_dict({"training": {"train_steps": 5, "stream_stride": 50}, "proposals": {"seed": 4}})
    assert settings.training.train_steps == 5 and settings.seed == 4


def test_representation_auto_is_internal_for_molecules_and_cartesian_for_toys():
    from openmmtools import testsystems

    auto = RepresentationSettings()
    assert auto.resolved_kind(DoubleWell2D().system) == "cartesian"
    assert auto.resolved_kind(testsystems.AlanineDipeptideVacuum(constraints=None).system) == "internal"
    assert RepresentationSettings(kind="cartesian").resolved_kind(testsystems.AlanineDipeptideVacuum().system) == "cartesian"
