"""``openmm-ddpm run``: the YAML config (every mistake one line naming the key), the run directory, resuming."""
import json
import os
import time

import numpy as np
import pytest
import yaml
from openmmtools import multistate

from openmm_ddpm.analysis import basin_ess, reweighted_expectation
from openmm_ddpm.app import cli
from openmm_ddpm.app.config import ConfigError, default_config, load_config, parse_config

TINY = {
    "system": {"builtin": "alanine_dipeptide_vacuum"},
    "temperatures": {"min": "300 K", "max": "600 K", "n": 3},
    "iterations": 6, "platform": "Reference", "checkpoint_interval": 2,
    "settings": {"representation": {"kind": "internal"}, "model": {"width": 16, "depth": 1, "n_steps": 4},
                 "training": {"train_steps": 2, "min_buffer_frames": 10},
                 "proposals": {"target_states": [0], "n_candidates": 2, "min_training_steps": 4},
                 "dynamics": {"n_steps": 20, "stream_stride": 10}, "freeze_after": 3, "seed": 1},
}


def write(path, values):
    with open(path, "w") as stream:
        yaml.safe_dump(values, stream)
    return str(path)


@pytest.mark.parametrize("values, names", [
    ({"iteration": 5}, "key iteration"),
    ({"temperatures": [300, 400]}, "temperatures[0] needs a unit"),
    ({"temperatures": ["400 K", "300 K"]}, "ascending"),
    ({"temperatures": ["300 K", "300 K"]}, "distinct"),
    ({"temperatures": ["300 K"]}, "at least two"),
    ({"temperatures": {"min": "300 K", "max": "200 K", "n": 4}}, "max > min"),
    ({"temperatures": ["300 kilojoule"]}, "temperatures[0]"),
    ({"system": {"builtin": "ubiquitin"}}, "system.builtin"),
    ({"system": {"pdb": "missing.pdb", "forcefield": ["amber14-all.xml"]}}, "system.pdb"),
    ({"system": {"pdb": "x.pdb"}}, "system.forcefield"),
    ({"system": {"builtin": "alanine_dipeptide_vacuum", "forcefield": ["amber14-all.xml"]}}, "system.forcefield does not go"),
    ({"system": {"builtin": "alanine_dipeptide_vacuum", "constraints": "allbonds"}}, "system.constraints"),
    ({"system": {"builtin": "alanine_dipeptide_vacuum", "solvent": "tip3p"}}, "system.solvent"),
    ({"platform": "Metal"}, "platform"),
    ({"iterations": 0}, "iterations"),
    ({"settings": {"model": {"widht": 3}}}, "widht"),
    ({"settings": {"dynamics": {"timestep": "2 meters"}}}, "timestep"),
])
def test_each_config_mistake_is_one_line_that_names_the_key(tmp_path, values, names, capsys):
    with pytest.raises(ConfigError) as error:
        parse_config(values, base=str(tmp_path))
    message = str(error.value)
    assert names in message and "\n" not in message
    # the command prints that line, exit status 2, no traceback
    assert cli.main(["run", write(tmp_path / "bad.yaml", values), "--out", str(tmp_path / "out")]) == 2
    printed = capsys.readouterr().err
    assert names in printed and "Traceback" not in printed and printed.count("\n") == 1
    assert not os.path.exists(tmp_path / "out" / "run.nc")


def test_missing_config_and_bad_yaml_are_one_line(tmp_path, capsys):
    assert cli.main(["run", str(tmp_path / "none.yaml")]) == 2
    (tmp_path / "broken.yaml").write_text("iterations: [1, 2\n")
    assert cli.main(["run", str(tmp_path / "broken.yaml")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and "not found" in lines[0] and "not valid YAML" in lines[1]


def test_config_round_trips_through_yaml(tmp_path):
    for config in (default_config(), parse_config(TINY)):
        again = load_config(write(tmp_path / "again.yaml", config.to_dict()))
        assert again == config
    ladder = parse_config({"temperatures": {"min": "300 K", "max": "1000 K", "n": 6}}).temperatures_kelvin
    np.testing.assert_allclose(ladder, np.geomspace(300.0, 1000.0, 6), rtol=1e-12)
    assert parse_config({"temperatures": ["300 K", "310.5 * kelvin", "320K"]}).temperatures_kelvin == (300.0, 310.5, 320.0)


def test_run_writes_its_directory_resumes_and_refuses_another_config(tmp_path, capsys):
    out = str(tmp_path / "run")
    config = write(tmp_path / "tiny.yaml", TINY)
    assert cli.main(["run", config, "--out", out, "--quiet"]) == 0
    assert set(os.listdir(out)) >= {"config.yaml", "model.pt", "model.pt.sha256", "run.log", "run.nc"}
    with open(os.path.join(out, "config.yaml")) as stream:
        assert stream.readline().startswith("# openmm-ddpm ")
    assert load_config(os.path.join(out, "config.yaml")) == parse_config(TINY, base=str(tmp_path))

    assert cli.main(["run", config, "--out", out, "--quiet", "--iterations", "8"]) == 0  # extends the same run
    assert "8 iterations (2 in" in capsys.readouterr().out
    reporter = multistate.MultiStateReporter(os.path.join(out, "run.nc"), open_mode="r")
    try:
        assert reporter.read_last_iteration(last_checkpoint=False) == 8
        energies = reporter.read_energies(8)[0]
        assert energies.shape == (3, 3) and np.all(np.isfinite(energies))
    finally:
        reporter.close()

    other = write(tmp_path / "other.yaml", {**TINY, "settings": {**TINY["settings"], "seed": 2}})
    assert cli.main(["run", other, "--out", out, "--quiet"]) == 2
    assert "another 'settings'" in capsys.readouterr().err
    with open(os.path.join(out, "config.yaml")) as stream:
        assert yaml.safe_load(stream)["settings"]["seed"] == 1  # nothing overwritten


def test_the_readme_yaml_is_the_built_in_run():
    import re

    with open(os.path.join(os.path.dirname(__file__), "..", "README.md")) as stream:
        block = re.search(r"```yaml\n(.*?)```", stream.read(), re.S).group(1)
    assert parse_config(yaml.safe_load(block)) == default_config()


def test_analyze_reports_each_state_from_its_own_samples(tmp_path, capsys):
    """The report's per-state P(phi > 0) is that of the configurations stored for that state (not replica)."""
    import mdtraj
    from openmmtools import testsystems

    from openmm import unit

    from openmm_ddpm.app.report import analyze
    from openmm_ddpm.app.sample import draw_weighted
    from openmm_ddpm.multistate.storage import read_ddpm_statistics, read_state_trajectories

    out = str(tmp_path / "run")
    # 6 ps at 2000 K visit phi > 0, 300 K does not: the two states' rows differ
    values = {**TINY, "iterations": 12, "temperatures": ["300 K", "2000 K"],
              "settings": {**TINY["settings"], "dynamics": {"n_steps": 500, "stream_stride": 250}}}
    started = time.time()
    assert cli.main(["run", write(tmp_path / "tiny.yaml", values), "--out", out, "--quiet"]) == 0
    elapsed = time.time() - started
    assert cli.main(["analyze", out, "--model-samples", "0"]) == 0
    assert "report.md" in capsys.readouterr().out
    assert cli.main(["analyze", out, "--model-samples", "8"]) == 0  # the model's line says what phi > 0 rests on
    assert "draws there, below ~20 not to be trusted" in capsys.readouterr().out
    report = analyze(out, model_samples=16, seed=3, collective_variables=["4,6,8,14", "6,8,14,16"])
    assert report.collective_variables == [[4, 6, 8, 14], [6, 8, 14, 16]]
    for bad, message in ((["4,6,8,99"], "0..21"), (["4,6,8,14,16"], "5 atoms"), (["1,2"] * 3, "3 times")):
        assert cli.main(["analyze", out, "--model-samples", "0", *[f"--cv={b}" for b in bad]]) == 2
        printed = capsys.readouterr().err
        assert message in printed and printed.count("\n") == 1
    assert report.iterations == 12 and report.first_iteration == 4
    statistics = read_ddpm_statistics(os.path.join(out, "run.nc"))
    moves = (statistics["ddpm_phase"] == 1) & (statistics["ddpm_n_candidates"] > 0)
    assert report.production_acceptance == pytest.approx(statistics["ddpm_n_accepted"][moves].sum() / moves.sum())
    _, positions = read_state_trajectories(os.path.join(out, "run.nc"), first_iteration=4)
    topology = mdtraj.Topology.from_openmm(testsystems.AlanineDipeptideVacuum().topology)
    for k, row in enumerate(report.per_state):
        phi = mdtraj.compute_phi(mdtraj.Trajectory(positions[:, k], topology))[1][:, 0]
        assert row["samples"] == 9 and row["p"] == pytest.approx(np.mean(phi > 0))
    assert report.per_state[0]["p"] != report.per_state[1]["p"]
    # basin changes in production: sign flips of phi of each state's stored configuration
    _, all_positions = read_state_trajectories(os.path.join(out, "run.nc"), first_iteration=1)
    for k, changes in enumerate(report.basin_changes):
        phi = mdtraj.compute_phi(mdtraj.Trajectory(all_positions[3:, k], topology))[1][:, 0]
        assert changes == np.sum(np.diff(phi > 0))
    # the time split: timestamps (1 s resolution) span the run, and hold its training and proposals
    assert report.training_seconds + report.proposal_seconds - 2 <= report.wall_seconds <= elapsed + 2
    # the model row reweights the same draws that `sample` writes (same seed)
    samples = draw_weighted(out, 300 * unit.kelvin, 16, seed=3)
    kept = np.all(np.isfinite(samples.positions), axis=(1, 2))
    phi = mdtraj.compute_phi(mdtraj.Trajectory(samples.positions[kept], topology))[1][:, 0]
    assert report.model_samples["p"] == pytest.approx(np.sum(samples.weights[kept][phi > 0]))
    assert report.model_samples["ess"] == pytest.approx(samples.ess)
    # ... with the delta-method error and the ESS of the draws inside phi > 0, what that population rests on
    inside = phi > 0
    assert report.model_samples["draws_in_phi_positive"] == inside.sum()
    assert report.model_samples["p_error"] == pytest.approx(reweighted_expectation(samples.log_weights[kept], inside).error)
    assert report.model_samples["ess_in_phi_positive"] == pytest.approx(
        basin_ess(samples.log_weights[kept], inside).get(True, (0.0,))[0])
    assert report.model_samples["ess_in_phi_positive"] <= inside.sum()
    for name in ("report.md", "summary.json", "free_energy_surfaces.png", "proposal_statistics.png", "basin_changes.png",
                 "model_beside_replicas.png", "collective_variables.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0


def test_sample_writes_frames_whose_weights_are_boltzmann_over_model_density(tmp_path, capsys):
    """Each written frame's log w is -u_T(x) - log q(x | T), recomputed here from the trajectory file at T.

    Negative control: the same frames recomputed at another temperature do not match.
    """
    import mdtraj
    from openmm import unit
    from openmmtools import states, testsystems

    from openmm_ddpm.multistate import load_exported_model
    from openmm_ddpm.moves.proposal import reduced_potentials

    out = str(tmp_path / "run")
    assert cli.main(["run", write(tmp_path / "tiny.yaml", {**TINY, "iterations": 8}), "--out", out, "--quiet"]) == 0
    trajectory = str(tmp_path / "samples.dcd")
    for bad in ("4,6,8,14", "4,6,8,14:0", "4,6,8,99:0:180", "4,6,8,14:zero:180", "4,6,8,14:180:0"):
        assert cli.main(["sample", out, "--temperature", "450K", "-n", "4", "--out", trajectory, "--region", bad]) == 2
        assert "--region" in capsys.readouterr().err
    assert not os.path.exists(trajectory)  # refused before drawing
    assert cli.main(["sample", out, "--temperature", "450K", "-n", "16", "--out", trajectory,
                     "--region", "4,6,8,14:0:180", "--region", "4, 6, 8, 14:-180:0"]) == 0
    printed = capsys.readouterr().out
    assert "ESS" in printed
    table = np.loadtxt(str(tmp_path / "samples.weights.csv"), delimiter=",", skiprows=1)
    weights, log_w = table[:, 0], table[:, 1]
    assert table.shape == (16, 4) and weights.sum() == pytest.approx(1.0)

    molecule = testsystems.AlanineDipeptideVacuum(constraints=None)
    frames = mdtraj.load(trajectory, top=mdtraj.Topology.from_openmm(molecule.topology)).xyz.astype(np.float64)
    # each region's line: the weight and the draws inside it, from the written frames and weights (phi by mdtraj)
    phi = np.degrees(mdtraj.compute_phi(mdtraj.Trajectory(frames, mdtraj.Topology.from_openmm(molecule.topology)))[1][:, 0])
    lines = {line.split(":")[0]: line for line in printed.splitlines() if line.startswith("region")}
    for text, inside in (("region 4,6,8,14", phi >= 0), ("region 4, 6, 8, 14", phi < 0)):
        population = float(lines[text].split("population ")[1].split(" ")[0])
        draws = int(lines[text].split("resting on ")[1].split(" ")[0])
        ess = float(lines[text].split("ESS ")[1])
        assert population == pytest.approx(weights[inside].sum(), abs=1e-3) and draws == inside.sum()
        expected_ess = weights[inside].sum() ** 2 / np.sum(weights[inside] ** 2) if inside.any() else 0.0
        assert ess == pytest.approx(expected_ess, abs=0.06)
    model = load_exported_model(os.path.join(out, "model.pt"), molecule.system)
    assert model.conditioning == "temperature"  # a temperature ladder's model, drawn at temperatures

    def log_weights_at(kelvin):
        state = states.ThermodynamicState(molecule.system, kelvin * unit.kelvin)
        u = reduced_potentials(state, states.SamplerState(molecule.positions), frames)
        return -u - model.log_prob(frames, kelvin * unit.kelvin)

    inside = np.isfinite(log_w)
    assert inside.sum() >= 8
    np.testing.assert_allclose(log_weights_at(450.0)[inside], log_w[inside], atol=1e-2)  # float32 frames
    assert np.max(np.abs(log_weights_at(300.0)[inside] - log_w[inside])) > 1.0


def test_every_system_source_builds_the_molecule_it_names(tmp_path):
    """prmtop + inpcrd and System XML + PDB give the built-in alanine dipeptide's energy; PDB + force field builds."""
    import openmm
    from openmm import app, unit
    from openmmtools import testsystems
    from openmmtools.testsystems import get_data_filename

    from openmm_ddpm.app.run import build_system

    def energy(system, positions):
        context = openmm.Context(system, openmm.VerletIntegrator(1.0), openmm.Platform.getPlatformByName("Reference"))
        context.setPositions(positions)
        return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)

    builtin = testsystems.AlanineDipeptideVacuum(constraints=None)
    reference = energy(builtin.system, builtin.positions)
    prmtop = get_data_filename("data/alanine-dipeptide-gbsa/alanine-dipeptide.prmtop")
    spec = parse_config({"system": {"prmtop": prmtop, "inpcrd": prmtop.replace(".prmtop", ".crd")}}).system
    system, positions, _ = build_system(spec)
    assert energy(system, positions) == pytest.approx(reference, abs=1e-6)

    with open(tmp_path / "system.xml", "w") as stream:
        stream.write(openmm.XmlSerializer.serialize(builtin.system))
    with open(tmp_path / "molecule.pdb", "w") as stream:
        app.PDBFile.writeFile(builtin.topology, builtin.positions, stream)
    spec = parse_config({"system": {"xml": "system.xml", "pdb": "molecule.pdb"}}, base=str(tmp_path)).system
    system, positions, _ = build_system(spec)
    assert energy(system, positions) == pytest.approx(energy(builtin.system, positions), abs=1e-9)

    spec = parse_config({"system": {"pdb": "molecule.pdb", "forcefield": ["amber14-all.xml"], "constraints": "hbonds"}},
                        base=str(tmp_path)).system
    system, positions, _ = build_system(spec)
    assert system.getNumParticles() == 22 and system.getNumConstraints() == 12  # the 12 bonds to hydrogen
    assert np.isfinite(energy(system, positions))


def plain_parallel_tempering_storage(path, n_iterations, analysis_atoms=True):
    """A plain openmmtools parallel-tempering run of alanine dipeptide (300, 450, 600 K), made without openmm_ddpm."""
    from openmm import unit
    from openmmtools import mcmc, states, testsystems

    molecule = testsystems.AlanineDipeptideVacuum(constraints=None)
    move = mcmc.LangevinDynamicsMove(timestep=1.0 * unit.femtosecond, n_steps=50)
    sampler = multistate.ParallelTemperingSampler(mcmc_moves=move, number_of_iterations=n_iterations,
                                                  online_analysis_interval=None)
    reporter = multistate.MultiStateReporter(str(path), checkpoint_interval=10,
                                             analysis_particle_indices=list(range(22)) if analysis_atoms else [])
    sampler.create(states.ThermodynamicState(molecule.system, 300 * unit.kelvin), states.SamplerState(molecule.positions),
                   reporter, min_temperature=300 * unit.kelvin, max_temperature=600 * unit.kelvin, n_temperatures=3)
    sampler.run()
    reporter.close()
    return molecule


def test_train_on_a_plain_run_uses_every_frame_and_sample_works_on_the_result(tmp_path, capsys):
    import shutil

    import torch
    from openmm import app, unit
    from openmmtools import cache

    from openmm_ddpm.multistate import load_exported_model
    from openmm_ddpm.multistate.storage import read_state_trajectories

    cache.global_context_cache.empty()
    molecule = plain_parallel_tempering_storage(tmp_path / "plain.nc", 20)
    with open(tmp_path / "molecule.pdb", "w") as stream:
        app.PDBFile.writeFile(molecule.topology, molecule.positions, stream)
    config = write(tmp_path / "settings.yaml", {"settings": TINY["settings"]})
    out = str(tmp_path / "model")
    assert cli.main(["train", str(tmp_path / "plain.nc"), "--pdb", str(tmp_path / "molecule.pdb"), "--out", out,
                     "--steps", "30", "--config", config]) == 0
    assert "trained" in capsys.readouterr().out
    stored = load_config(os.path.join(out, "config.yaml"))
    np.testing.assert_allclose(stored.temperatures_kelvin, np.geomspace(300.0, 600.0, 3), rtol=1e-9)
    state = torch.load(os.path.join(out, "model.pt"), map_location="cpu", weights_only=True)
    assert state["settings"]["model"]["width"] == 16  # the --config's settings
    # the directory moves with its files, and sample draws from it
    shutil.copytree(out, tmp_path / "moved")
    assert cli.main(["sample", str(tmp_path / "moved"), "--temperature", "400K", "-n", "8",
                     "--out", str(tmp_path / "s.pdb")]) == 0
    # analyze reports the plain run it was trained on, and the model beside it
    assert cli.main(["analyze", out, "--model-samples", "8"]) == 0
    with open(os.path.join(out, "summary.json")) as stream:
        summary = json.load(stream)
    assert summary["iterations"] == 20 and len(summary["per_state"]) == 3 and summary["model_samples"]["samples"] == 8
    assert np.isnan(summary["production_acceptance"]) and summary["training_seconds"] == 0
    assert "plain replica exchange" in open(os.path.join(out, "report.md")).read()
    model = load_exported_model(os.path.join(out, "model.pt"), molecule.system)
    _, frames = read_state_trajectories(str(tmp_path / "plain.nc"))
    assert frames.shape[:2] == (20, 3)
    relabelled = model.relabel(frames[:, 0], np.random.default_rng(0))  # into the rotor windows the model covers
    assert np.isfinite(model.log_prob(relabelled, 300 * unit.kelvin)).mean() > 0.9

    plain_parallel_tempering_storage(tmp_path / "bare.nc", 2, analysis_atoms=False)
    assert cli.main(["train", str(tmp_path / "bare.nc"), "--pdb", str(tmp_path / "molecule.pdb"),
                     "--out", str(tmp_path / "m2")]) == 2
    assert "analysis" in capsys.readouterr().err


def test_auto_platform_is_reference_in_vacuum_and_cpu_or_faster_with_implicit_solvent():
    from openmmtools import testsystems

    from openmm_ddpm.app.run import choose_platform

    assert choose_platform("auto", testsystems.AlanineDipeptideVacuum().system).getName() == "Reference"
    assert choose_platform("auto", testsystems.AlanineDipeptideImplicit().system).getName() in ("CUDA", "OpenCL", "CPU")
    with pytest.raises(ConfigError, match="not available"):
        choose_platform("Metal", testsystems.AlanineDipeptideVacuum().system)


def test_debug_shows_the_traceback_before_or_after_the_command(tmp_path):
    bad = write(tmp_path / "bad.yaml", {"iteration": 5})
    for argv in (["--debug", "run", bad], ["run", bad, "--debug"]):
        with pytest.raises(ConfigError, match="iteration"):
            cli.main(argv)


def test_the_configuration_reference_in_docs_is_up_to_date():
    """docs/configuration.md is what the settings layer generates (python -m openmm_ddpm.app.config_reference)."""
    from openmm_ddpm.app import config_reference

    assert config_reference.main(["--check"]) == 0
    text = config_reference.reference_markdown()
    for group in ("representation", "model", "training", "proposals", "dynamics"):
        assert f"### `{group}`" in text
    assert "| `freeze_after` |" not in text and "built-in run `2000`" in text  # the settings default against the run


def test_round_trips_count_lowest_to_highest_and_back():
    from openmm_ddpm.multistate.storage import count_round_trips

    assert count_round_trips([[0], [2], [0], [1], [2], [1], [0]], 3).tolist() == [2]
    assert count_round_trips([[2], [0], [2], [0]], 3).tolist() == [1]  # counted from the first visit to the lowest
    assert count_round_trips([[1], [0], [1], [0], [1]], 3).tolist() == [0]  # never at the top
    # two replicas swapping every iteration between two states: each goes 0 -> 1 -> 0 every two iterations
    assert count_round_trips([[0, 1], [1, 0]] * 4, 2).tolist() == [3, 3]


def test_a_run_killed_midway_resumes_to_the_end(tmp_path):
    """SIGKILL during the production phase, then the same command: the run resumes from its last checkpoint and ends."""
    import signal
    import subprocess
    import sys
    import time

    out = str(tmp_path / "run")
    values = {**TINY, "iterations": 400, "checkpoint_interval": 5}
    config = write(tmp_path / "tiny.yaml", values)
    command = [sys.executable, "-m", "openmm_ddpm.app.cli", "run", config, "--out", out, "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log, deadline = os.path.join(out, "run.log"), time.time() + 120
    while time.time() < deadline and not (os.path.exists(log) and "frozen" in open(log).read()):
        time.sleep(0.2)
    time.sleep(1.0)  # into the production phase
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL

    assert cli.main(["run", config, "--out", out, "--quiet", "--iterations", "30"]) == 0
    reporter = multistate.MultiStateReporter(os.path.join(out, "run.nc"), open_mode="r")
    try:
        last = reporter.read_last_iteration(last_checkpoint=False)
        assert last >= 30
        for iteration in range(1, last + 1):  # every iteration's energies survived the kill and the resume
            assert np.all(np.isfinite(reporter.read_energies(iteration)[0]))
    finally:
        reporter.close()
    assert os.path.getsize(os.path.join(out, "model.pt")) > 0


def test_the_gpu_preset_asks_for_cuda_and_without_a_gpu_stops_in_one_line(tmp_path, capsys):
    """examples/gpu_workstation.yaml: OpenMM and torch on CUDA, 12 replicas; on a machine without them, one line."""
    import torch

    preset = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "gpu_workstation.yaml")
    config = load_config(preset)
    assert config.platform == "CUDA" and config.settings.model.device == "cuda"
    assert len(config.temperatures_kelvin) == 12 and config.system.constraints == "hbonds"
    assert config.settings.proposals.n_candidates == 4096
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine runs the preset")
    no_gpu = write(tmp_path / "cuda_model.yaml", {**TINY, "settings": {**TINY["settings"], "model": {"device": "cuda"}}})
    for path, names in ((preset, "platform 'CUDA'"), (no_gpu, "settings.model.device 'cuda'")):
        assert cli.main(["run", path, "--out", str(tmp_path / "out")]) == 2
        printed = capsys.readouterr().err
        assert names in printed and printed.count("\n") == 1 and "Traceback" not in printed


def test_the_commands_print_their_results_without_the_libraries_banners(tmp_path):
    """openmmtools' citations go to run.log, pymbar's JAX advert and openmmtools' 'experimental' notice nowhere;
    a warning of our own still reaches stderr (negative control: the plain-replica-exchange notice of a System
    the proposals cannot handle)."""
    import logging
    import subprocess
    import sys

    from openmm_ddpm.app.cli import LibraryNoise
    from openmm_ddpm.app.report import analyze

    out = str(tmp_path / "run")
    config = write(tmp_path / "tiny.yaml", {**TINY, "iterations": 6})
    command = [sys.executable, "-m", "openmm_ddpm.app.cli"]
    for arguments in (["run", config, "--out", out, "--quiet"], ["analyze", out, "--model-samples", "2"]):
        completed = subprocess.run(command + arguments, capture_output=True, text=True, timeout=300)
        assert completed.returncode == 0, completed.stderr[-2000:]
        assert "cite" not in completed.stdout and "JAX" not in completed.stderr and "experimental" not in completed.stderr
        assert completed.stdout.count("\n") <= 8 and completed.stderr == ""
    assert "Please cite" in open(os.path.join(out, "run.log")).read()
    short = str(tmp_path / "short")
    assert cli.main(["run", write(tmp_path / "short.yaml", {**TINY, "iterations": 4}), "--out", short, "--quiet"]) == 0
    with pytest.raises(ConfigError, match="run it longer"):  # one production iteration: nothing to estimate from
        analyze(short)
    record = logging.LogRecord("openmm_ddpm.multistate.support", logging.WARNING, "", 0, "runs as plain replica exchange",
                               None, None)
    assert LibraryNoise().filter(record)
    record.name = "pymbar.mbar_solvers"
    assert not LibraryNoise().filter(record)
