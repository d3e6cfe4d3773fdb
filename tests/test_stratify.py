"""``openmm-ddpm sample --stratify``: a region weighed from its own model, every written weight exact.

Tiny models (seconds): these tests check what the weights are, not how good the models are (that is
benchmarks/stratified_basin_sampling.py); the estimator itself is tested against exact values in
tests/test_stratified.py.
"""
import os

import numpy as np
import pytest
from test_cli_run import TINY, write

from openmm_ddpm.app import cli

REGION = "4,6,8,14:-180:-100"  # phi in the beta basin: the tiny run's frames hold it


@pytest.fixture(scope="module")
def stratified_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("stratify")
    out = str(tmp_path / "run")
    assert cli.main(["run", write(tmp_path / "tiny.yaml", {**TINY, "iterations": 8}), "--out", out, "--quiet"]) == 0
    return tmp_path, out


def test_written_weights_are_boltzmann_over_the_density_of_the_model_of_their_stratum(stratified_run, capsys):
    """Inside the region each weighted frame's log w is -u - log q_region - log n; outside, -u - log q_run - log n.

    The printed population is the written weight inside the region. Negative control: the frames inside, scored
    by the run's model instead, do not match (off by > 1 nat, or outside its domain).
    """
    import mdtraj
    from openmm import unit
    from openmmtools import states, testsystems

    from openmm_ddpm.moves.proposal import reduced_potentials
    from openmm_ddpm.multistate import load_exported_model

    tmp_path, out = stratified_run
    trajectory, n = str(tmp_path / "stratified.dcd"), 24
    assert cli.main(["sample", out, "--temperature", "350K", "-n", str(n), "--out", trajectory, "--region", REGION,
                     "--stratify", "--region-seeds", "3", "--region-md-ps", "0.4", "--region-steps", "40"]) == 0
    printed = capsys.readouterr().out
    population = float(printed.split("population ")[1].split(" ")[0])
    table = np.loadtxt(str(tmp_path / "stratified.weights.csv"), delimiter=",", skiprows=1)
    weights, log_w = table[:, 0], table[:, 1]
    molecule = testsystems.AlanineDipeptideVacuum(constraints=None)
    topology = mdtraj.Topology.from_openmm(molecule.topology)
    frames = mdtraj.load(trajectory, top=topology).xyz.astype(np.float64)
    phi = np.degrees(mdtraj.compute_phi(mdtraj.Trajectory(frames, topology))[1][:, 0])
    inside, weighted = (phi >= -180) & (phi < -100), np.isfinite(log_w)
    assert weighted[inside].any() and weighted[~inside].any()
    assert population == pytest.approx(weights[inside].sum(), rel=1e-3)

    state = states.ThermodynamicState(molecule.system, 350 * unit.kelvin)
    u = reduced_potentials(state, states.SamplerState(molecule.positions), frames)

    def expected(model_name):
        model = load_exported_model(os.path.join(out, model_name), molecule.system)
        return -u - model.log_prob(frames, 350 * unit.kelvin) - np.log(n)

    region_model, run_model = expected("region_model.pt"), expected("model.pt")
    np.testing.assert_allclose(log_w[weighted & inside], region_model[weighted & inside], atol=2e-2)  # float32 DCD
    np.testing.assert_allclose(log_w[weighted & ~inside], run_model[weighted & ~inside], atol=2e-2)
    wrong = np.abs(log_w[weighted & inside] - run_model[weighted & inside])  # NaN: outside the run model's domain
    assert np.all(~np.isfinite(wrong) | (wrong > 1.0))


def test_stratify_refuses_what_it_cannot_do_in_one_line(stratified_run, capsys):
    tmp_path, out = stratified_run
    base = ["sample", out, "--temperature", "300K", "-n", "4", "--out", str(tmp_path / "x.dcd"), "--stratify"]
    for extra, message in ((["--region-seeds", "1"], "exactly one --region"),
                           (["--region", REGION, "--region", REGION], "exactly one --region"),
                           (["--region", REGION, "--region-md-ps", "0"], "must be positive"),
                           (["--region", "4,6:5:6"], "no stored frame")):
        assert cli.main(base + extra) == 2
        assert message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x.dcd")
