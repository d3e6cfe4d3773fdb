"""Estimators: correlation-aware errors against processes with known answers; dihedrals against our own."""
import numpy as np
import pytest
import torch
from openmm import unit
from openmmtools import testsystems

from openmm_ddpm.analysis import (
    backbone_dihedrals,
    basin_free_energy_difference_kt,
    batch_means_standard_error,
    mean_with_correlated_error,
)
from openmm_ddpm.coordinates.geometry import dihedral


def ar1(n, rho, seed):
    rng = np.random.default_rng(seed)
    x = np.empty(n)
    x[0] = rng.normal()
    noise = rng.normal(size=n) * np.sqrt(1 - rho**2)
    for i in range(1, n):
        x[i] = rho * x[i - 1] + noise[i]
    return x


def test_correlated_error_matches_the_ar1_theory():
    """AR(1) with unit variance: g = (1 + rho) / (1 - rho), so the error is sqrt(g / n)."""
    rho, n = 0.9, 40000
    mean, error, g = mean_with_correlated_error(ar1(n, rho, 0))
    assert g == pytest.approx((1 + rho) / (1 - rho), rel=0.2)
    assert error == pytest.approx(np.sqrt(19.0 / n), rel=0.2)
    assert abs(mean) < 4 * error
    assert batch_means_standard_error(ar1(n, rho, 1), n_batches=20) == pytest.approx(np.sqrt(19.0 / n), rel=0.4)


def test_basin_free_energy_and_its_error():
    rng = np.random.default_rng(2)
    p_true = 0.1
    indicator = rng.random(50000) < p_true
    p, p_error, df, df_error = basin_free_energy_difference_kt(indicator)
    assert abs(p - p_true) < 4 * p_error
    assert df == pytest.approx(np.log(9.0), abs=4 * df_error)
    assert df_error == pytest.approx(p_error / (p * (1 - p)))
    assert basin_free_energy_difference_kt(np.zeros(10, dtype=bool))[2] == np.inf


def test_backbone_dihedrals_agree_with_our_dihedral():
    molecule = testsystems.AlanineDipeptideVacuum(constraints=None)
    positions = molecule.positions.value_in_unit(unit.nanometer)[None]
    phi, psi = backbone_dihedrals(positions, molecule.topology)
    x = torch.as_tensor(positions)
    ours_phi = dihedral(x[:, 4], x[:, 6], x[:, 8], x[:, 14])  # C(ACE)-N-CA-C
    ours_psi = dihedral(x[:, 6], x[:, 8], x[:, 14], x[:, 16])  # N-CA-C-N(NME)
    assert phi.shape == (1, 1) and psi.shape == (1, 1)
    assert phi[0, 0] == pytest.approx(ours_phi.item(), abs=1e-5)
    assert psi[0, 0] == pytest.approx(ours_psi.item(), abs=1e-5)


def test_basin_ess_counts_the_samples_each_basin_rests_on():
    """Basin 0: four equal weights (ESS 4); basin 1: weights 1, 1e-3, 1e-3 (ESS just above 1), NaN and -inf count 0."""
    from openmm_ddpm.analysis import basin_ess

    log_w = np.log([1.0, 1.0, 1.0, 1.0, 4.0, 4e-3, 4e-3]).tolist() + [np.nan, -np.inf]
    basin = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0])
    result = basin_ess(log_w, basin)
    ess0, share0, n0 = result[0]
    ess1, share1, n1 = result[1]
    assert (n0, n1) == (5, 4)
    assert ess0 == pytest.approx(4.0) and share0 == pytest.approx(4.0 / 8.008)
    assert ess1 == pytest.approx(4.008**2 / (16 + 2 * 16e-6)) and share1 == pytest.approx(4.008 / 8.008)
    assert 1.0 < ess1 < 1.01  # the basin's estimate rests on one sample, whatever the overall ESS (about 2.6)


def test_basin_ess_of_a_rare_basin_whose_weights_underflow_when_squared():
    """Five equal weights 500 nats below the rest (a model that gives a rare basin little weight): ESS 5, not NaN.

    Normalised by the largest weight overall, exp(-500)^2 underflows to 0 (the ESS was NaN); the ESS of a basin does
    not depend on the scale of its weights, so the answer is 5, and the basin's share of the weight exp(-500) / 2.
    """
    from openmm_ddpm.analysis import basin_ess

    log_w = np.array([0.0] * 10 + [-500.0] * 5)
    result = basin_ess(log_w, log_w < -1)
    assert result[True] == (pytest.approx(5.0), pytest.approx(np.exp(-500.0) / 2, rel=1e-9), 5)
    assert result[False] == (pytest.approx(10.0), pytest.approx(1.0), 10)
    assert basin_ess(log_w + 300.0, log_w < -1)[True][0] == pytest.approx(5.0)  # and no overflow the other way


def test_collective_variables_are_the_distances_angles_and_dihedrals_of_their_atoms():
    """Dihedral 4-6-8-14 of alanine dipeptide is mdtraj's phi; a distance and an angle against numpy; the free-energy
    profile is -ln of the histogram's populations."""
    import mdtraj
    from openmmtools import testsystems

    from openmm_ddpm.analysis.collective import (collective_variable_values, free_energy_profile, histogram_edges,
                                                 parse_collective_variable)

    molecule = testsystems.AlanineDipeptideVacuum(constraints=None)
    base = molecule.positions.value_in_unit(unit.nanometer)
    frames = base[None] + np.random.default_rng(0).normal(0.0, 0.01, (50,) + base.shape)
    topology = mdtraj.Topology.from_openmm(molecule.topology)
    phi = np.degrees(mdtraj.compute_phi(mdtraj.Trajectory(frames.astype(np.float32), topology))[1][:, 0])
    np.testing.assert_allclose(collective_variable_values(frames, molecule.topology, (4, 6, 8, 14)), phi, atol=1e-3)
    np.testing.assert_allclose(collective_variable_values(frames, molecule.topology, (1, 4)),
                               np.linalg.norm(frames[:, 1] - frames[:, 4], axis=1), rtol=1e-5)
    a, b = frames[:, 1] - frames[:, 4], frames[:, 6] - frames[:, 4]
    angle = np.degrees(np.arccos(np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))
    np.testing.assert_allclose(collective_variable_values(frames, molecule.topology, (1, 4, 6)), angle, atol=1e-3)
    assert parse_collective_variable(" 4, 6,8,14", 22) == (4, 6, 8, 14)
    for bad in ("4,4", "1,2,3,4,5", "a,b", "0,22"):
        with pytest.raises(ValueError):
            parse_collective_variable(bad, 22)
    values = np.array([0.1] * 30 + [0.3] * 10)
    edges = [histogram_edges((1, 4), values, 2)]
    np.testing.assert_allclose(free_energy_profile([values], edges), [0.0, np.log(3.0)])
