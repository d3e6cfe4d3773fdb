"""The explicit-solvent workflow: a solute-only model trained on a solvated run, labelled approximate.

``openmm-ddpm train`` on an openmmtools run of alanine dipeptide in TIP3P
water keeps the solute's 22 atoms; its System is the solute alone in
vacuum, which must be the very System a force field builds for the
peptide without water (energies equal to rounding). Held-out states are
left out of the buffer; ``sample`` and ``analyze`` report the model's
samples as drawn (equal weights), never as Boltzmann-reweighted.
"""
import json
import os

import numpy as np
import openmm
import pytest
from openmm import app, unit

from openmm_ddpm.app import cli
from openmm_ddpm.coordinates.solute import is_solvated, solute_atoms, solute_system

FORCEFIELD = ("amber14-all.xml", "amber14/tip3p.xml")


@pytest.fixture(scope="module")
def solvated():
    """(System, Topology, positions) of alanine dipeptide in a 2.0 nm TIP3P box, HBonds, rigid water, PME."""
    from openmmtools import testsystems

    peptide = testsystems.AlanineDipeptideVacuum()
    forcefield = app.ForceField(*FORCEFIELD)
    modeller = app.Modeller(peptide.topology, peptide.positions)
    modeller.addSolvent(forcefield, model="tip3p", boxSize=openmm.Vec3(2.0, 2.0, 2.0) * unit.nanometer)
    system = forcefield.createSystem(modeller.topology, nonbondedMethod=app.PME, nonbondedCutoff=0.9 * unit.nanometer,
                                     constraints=app.HBonds, rigidWater=True)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(modeller.positions)
    openmm.LocalEnergyMinimizer.minimize(context, maxIterations=50)
    return system, modeller.topology, context.getState(getPositions=True).getPositions(asNumpy=True)


def energy(system, positions):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def test_the_solute_system_is_the_peptide_the_force_field_builds_without_water(solvated):
    system, topology, positions = solvated
    atoms = solute_atoms(topology)
    assert atoms == list(range(22)) and is_solvated(system, topology)
    solute = solute_system(system, atoms)
    peptide_topology = app.Modeller(topology, positions)
    peptide_topology.delete([a for a in topology.atoms() if a.index >= 22])
    vacuum = app.ForceField(*FORCEFIELD).createSystem(peptide_topology.topology, nonbondedMethod=app.NoCutoff,
                                                       constraints=app.HBonds)
    assert not is_solvated(vacuum, peptide_topology.topology)
    assert solute.getNumParticles() == 22 and solute.getNumConstraints() == vacuum.getNumConstraints() == 12
    assert not solute.usesPeriodicBoundaryConditions()
    peptide = positions[:22]
    for x in (peptide, peptide + np.random.default_rng(0).normal(0, 0.01, (22, 3)) * unit.nanometer):
        assert energy(solute, x) == pytest.approx(energy(vacuum, x), abs=1e-6)
    # negative control: half a molecule is not a solute
    with pytest.raises(ValueError, match="whole molecules"):
        solute_system(system, list(range(10)))


def solvated_parallel_tempering(path, solvated, n_iterations):
    """A plain openmmtools run of the solvated peptide (300, 350, 400 K) storing only the solute per iteration."""
    from openmmtools import cache, mcmc, multistate, states

    system, topology, positions = solvated
    cache.global_context_cache.empty()
    move = mcmc.LangevinDynamicsMove(timestep=2.0 * unit.femtosecond, n_steps=10)
    sampler = multistate.ParallelTemperingSampler(mcmc_moves=move, number_of_iterations=n_iterations,
                                                  online_analysis_interval=None)
    reporter = multistate.MultiStateReporter(str(path), checkpoint_interval=10, analysis_particle_indices=list(range(22)))
    kelvins = [300.0, 350.0, 400.0] * unit.kelvin
    sampler.create(states.ThermodynamicState(system, kelvins[0]),
                   states.SamplerState(positions, box_vectors=system.getDefaultPeriodicBoxVectors()),
                   reporter, temperatures=kelvins, n_temperatures=3)
    sampler.run()
    reporter.close()


@pytest.mark.filterwarnings("ignore:MBAR over the states")  # 8 iterations of states 50 K apart in water
def test_train_on_a_solvated_run_gives_a_solute_model_whose_samples_say_they_are_approximate(tmp_path, solvated, capsys):
    import yaml

    from openmm_ddpm.app.train import read_temperature_ladder
    from openmm_ddpm.multistate import load_exported_model

    system, topology, positions = solvated
    solvated_parallel_tempering(tmp_path / "water.nc", solvated, 8)
    with open(tmp_path / "solvated.pdb", "w") as stream:
        app.PDBFile.writeFile(topology, positions, stream)
    with open(tmp_path / "settings.yaml", "w") as stream:
        yaml.safe_dump({"settings": {"representation": {"kind": "internal"}, "model": {"width": 16, "depth": 1,
                                                                                       "n_steps": 4}}}, stream)
    out = str(tmp_path / "model")
    assert cli.main(["train", str(tmp_path / "water.nc"), "--pdb", str(tmp_path / "solvated.pdb"), "--out", out,
                     "--steps", "20", "--config", str(tmp_path / "settings.yaml"), "--hold-out", "1"]) == 0
    printed = capsys.readouterr().out
    assert "on 16 frames at 2 temperatures" in printed and "solute's 22 atoms alone" in printed  # 8 iterations x 2 states
    with open(os.path.join(out, "trained_on.json")) as stream:
        source = json.load(stream)
    assert source["solute_atoms"] == list(range(22)) and source["held_out_states"] == [1]
    model_system = openmm.XmlSerializer.deserialize(open(os.path.join(out, "system.xml")).read())
    assert model_system.getNumParticles() == 22 and not model_system.usesPeriodicBoundaryConditions()
    assert app.PDBFile(os.path.join(out, "structure.pdb")).topology.getNumAtoms() == 22
    # the model covers the stored solute frames of the held-out state (it knows the molecule's geometry)
    model = load_exported_model(os.path.join(out, "model.pt"), model_system)
    frames = read_temperature_ladder(str(tmp_path / "water.nc")).positions[:, 1]
    assert np.isfinite(model.log_prob(model.relabel(frames, np.random.default_rng(0)), 350 * unit.kelvin)).all()

    assert cli.main(["sample", out, "--temperature", "325K", "-n", "6", "--out", str(tmp_path / "s.pdb")]) == 0
    assert "approximate" in capsys.readouterr().err
    table = np.loadtxt(tmp_path / "s.weights.csv", delimiter=",", skiprows=1, ndmin=2)
    assert np.allclose(table[:, 0], 1.0 / len(table)) and np.isnan(table[:, 2]).all()  # equal weights, no u_T

    assert cli.main(["analyze", out, "--model-samples", "6"]) == 0
    with open(os.path.join(out, "summary.json")) as stream:
        summary = json.load(stream)
    assert len(summary["per_state"]) == 3 and summary["model_samples"]["reweighted"] is False
    assert "APPROXIMATE" in open(os.path.join(out, "report.md")).read()


@pytest.mark.filterwarnings("ignore:MBAR over the states")
def test_run_on_a_solvated_pdb_is_plain_replica_exchange_that_stores_the_solute_for_train(tmp_path, solvated,
                                                                                          monkeypatch, capsys):
    import yaml

    from openmm_ddpm.app import run as run_module
    from openmm_ddpm.app.train import read_temperature_ladder

    system, topology, positions = solvated
    with open(tmp_path / "solvated.pdb", "w") as stream:
        app.PDBFile.writeFile(topology, positions, stream)
    config = {"system": {"pdb": "solvated.pdb", "forcefield": list(FORCEFIELD), "constraints": "hbonds"},
              "temperatures": ["300 K", "330 K"], "iterations": 4, "platform": "CPU", "checkpoint_interval": 2,
              "settings": {"dynamics": {"n_steps": 10, "stream_stride": 5, "timestep": "2.0 * femtosecond"}}}
    with open(tmp_path / "water.yaml", "w") as stream:
        yaml.safe_dump(config, stream)
    monkeypatch.setattr(run_module, "ANALYSIS_ATOMS", 100)  # a box of water too big to store every atom
    with pytest.warns(UserWarning, match="plain replica exchange: the System is periodic"):
        assert cli.main(["run", str(tmp_path / "water.yaml"), "--out", str(tmp_path / "run")]) == 0
    assert "plain replica exchange" in capsys.readouterr().out
    ladder = read_temperature_ladder(str(tmp_path / "run" / "run.nc"))
    assert ladder.positions.shape[1:] == (2, 22, 3) and list(ladder.stored_atoms) == list(range(22))
    bonds = np.linalg.norm(ladder.positions[:, :, 4] - ladder.positions[:, :, 6], axis=-1)  # C(ACE)-N, whole molecule
    assert np.all((bonds > 0.12) & (bonds < 0.15))
    assert cli.main(["train", str(tmp_path / "run" / "run.nc"), "--pdb", str(tmp_path / "solvated.pdb"),
                     "--out", str(tmp_path / "model"), "--steps", "5"]) == 0
    assert "solute's 22 atoms alone" in capsys.readouterr().out
