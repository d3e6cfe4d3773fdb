"""Internal coordinates: Z-matrix round trip, Jacobian, chirality, domain."""
import math

import numpy as np
import pytest
import torch
from openmm import unit
from openmmtools import testsystems
from test_coordinates import finite_difference_jacobian

from openmm_ddpm.coordinates import InternalCoordinates
from openmm_ddpm.coordinates.geometry import dihedral
from openmm_ddpm.coordinates.topology import (
    atom_elements,
    bond_graph,
    build_zmatrix,
    chiral_centres,
)


@pytest.fixture(scope="module")
def alanine():
    system = testsystems.AlanineDipeptideVacuum(constraints=None)
    return system, np.asarray(system.positions.value_in_unit(unit.nanometer))


@pytest.fixture(scope="module")
def coordinates(alanine):
    return InternalCoordinates(alanine[0].topology, alanine[1])


def perturbed(positions, n, scale=0.01, seed=0):
    noise = np.random.default_rng(seed).normal(0.0, scale, size=(n,) + positions.shape)
    return torch.as_tensor(positions[None] + noise)


def test_zmatrix_references_are_bonded_and_placed_before(alanine):
    neighbours = bond_graph(alanine[0].topology)
    order, references, second = build_zmatrix(neighbours, atom_elements(alanine[0].topology))
    assert sorted(order) == list(range(22)) and len(references) == 19
    rank = {atom: position for position, atom in enumerate(order)}
    assert order[1] in neighbours[order[0]] and second in neighbours[order[2]]
    for i, j, k, l in references:
        assert j in neighbours[i] and len({i, j, k, l}) == 4
        assert max(rank[j], rank[k], rank[l]) < rank[i]


def test_round_trip_keeps_the_frame(coordinates, alanine):
    positions = perturbed(alanine[1], 8)
    features, logdet = coordinates.forward(positions)
    assert features.shape == (8, 60)
    back, inverse_logdet = coordinates.inverse(features, coordinates.frame(positions))
    assert torch.allclose(back, positions, atol=1e-10)
    assert torch.allclose(logdet + inverse_logdet, torch.zeros(8, dtype=torch.float64))


def test_log_jacobian_matches_finite_differences(coordinates, alanine):
    """|d(q, frame)/dx| = 1 / (J(q) sin theta_1) with frame = (x0, polar angles of 0->1, azimuth of 2)."""
    a0, a1, a2 = coordinates.order[:3]
    external = torch.tensor([[3.0, -2.0, 1.0]], dtype=torch.float64)

    def full_map(flat):
        x = torch.as_tensor(flat.reshape(1, 22, 3))
        features, _ = coordinates.forward(x)
        e1 = (x[:, a1] - x[:, a0]) / torch.linalg.norm(x[:, a1] - x[:, a0])
        polar, azimuth = torch.acos(e1[:, 2]), torch.atan2(e1[:, 1], e1[:, 0])
        twist = dihedral(x[:, a2], x[:, coordinates.second_reference], x[:, a1 if coordinates.second_reference == a0 else a0], external)
        return torch.cat([features[0], x[0, a0], polar, azimuth, twist]).numpy()

    x = perturbed(alanine[1], 1, seed=3)
    jacobian = finite_difference_jacobian(full_map, x[0].numpy().ravel(), eps=1e-7)
    _, logdet = coordinates.forward(x)
    e1 = (x[0, a1] - x[0, a0]) / torch.linalg.norm(x[0, a1] - x[0, a0])
    expected = np.linalg.slogdet(jacobian)[1]
    assert (logdet[0] - math.log(math.sin(math.acos(e1[2])))).item() == pytest.approx(expected, abs=1e-5)


def test_sibling_torsions_are_a_unit_jacobian_shear_that_widens_narrow_directions(alanine):
    """Relative and absolute sibling torsions: same log-det, same positions back, and the
    relative features of a methyl group's hydrogens are narrow where the absolute ones are not."""
    relative = InternalCoordinates(alanine[0].topology, alanine[1], relative_sibling_torsions=True)
    absolute = InternalCoordinates(alanine[0].topology, alanine[1], relative_sibling_torsions=False)
    siblings = relative.sibling_reference
    assert (absolute.sibling_reference == -1).all() and (siblings >= 0).sum() >= 6
    for m in torch.nonzero(siblings >= 0).ravel().tolist():
        assert relative.references[m][1:] == relative.references[int(siblings[m])][1:]
        assert siblings[int(siblings[m])] == -1  # a reference row is itself absolute

    # a rotating methyl group: absolute torsions of its hydrogens spread, their differences do not
    positions = perturbed(alanine[1], 64, scale=0.001, seed=4)
    methyl_carbon, hydrogens = 10, [11, 12, 13]
    rows = [m for m, ref in enumerate(relative.references) if ref[0] in hydrogens]
    angle = torch.linspace(0, 2 * math.pi, 64, dtype=torch.float64)
    axis = positions[:, methyl_carbon] - positions[:, 8]
    axis = axis / torch.linalg.norm(axis, dim=-1, keepdim=True)
    for h in hydrogens:  # Rodrigues rotation of each H about the CA-CB axis
        v = positions[:, h] - positions[:, methyl_carbon]
        cos, sin = torch.cos(angle)[:, None], torch.sin(angle)[:, None]
        v = v * cos + torch.cross(axis, v, dim=-1) * sin + axis * (axis * v).sum(-1, keepdim=True) * (1 - cos)
        positions[:, h] = positions[:, methyl_carbon] + v
    relative.fit_torsion_cuts(positions)
    absolute.fit_torsion_cuts(positions)
    f_rel, logdet_rel = relative.forward(positions)
    f_abs, logdet_abs = absolute.forward(positions)
    assert torch.allclose(logdet_rel, logdet_abs, atol=1e-12)
    columns = [3 + 3 * m + 2 for m in rows]
    assert f_abs[:, columns].std(0).min() > 1.0
    assert f_rel[:, columns[0]].std() > 1.0 and f_rel[:, columns[1:]].std(0).max() < 0.05
    back, logdet_back = relative.inverse(f_rel, relative.frame(positions))
    assert torch.allclose(back, positions, atol=1e-10)
    assert torch.allclose(logdet_back, -logdet_rel, atol=1e-12)


def test_alanine_has_one_chiral_centre_and_detects_its_mirror_image(coordinates, alanine):
    assert [centre for centre, _ in coordinates.centres] == [8]  # CA
    positions = perturbed(alanine[1], 4)
    assert coordinates.valid_positions(positions).all()
    assert not coordinates.valid_positions(-positions).any()


def test_no_false_chirality_at_prochiral_centres(alanine):
    """Glycine (CB replaced by H, methyl H removed): CA carries two equivalent H and is not chiral."""
    neighbours = bond_graph(alanine[0].topology)
    elements = atom_elements(alanine[0].topology)
    keep = [i for i in range(22) if i not in (11, 12, 13)]
    new_index = {old: new for new, old in enumerate(keep)}
    glycine = [[new_index[n] for n in neighbours[old] if n in new_index] for old in keep]
    glycine_elements = [("H" if old == 10 else elements[old]) for old in keep]
    assert chiral_centres(glycine, glycine_elements) == []
    # methyl carbons and CH3 caps are never chiral either
    assert [c for c, _ in chiral_centres(neighbours, elements)] == [8]


def test_flipping_a_chiral_centre_through_a_torsion_is_detected(coordinates, alanine):
    positions = perturbed(alanine[1], 1)
    features, _ = coordinates.forward(positions)
    frame = coordinates.frame(positions)
    ha = [m for m, (i, *_rest) in enumerate(coordinates.references) if i == 9][0]  # HA on CA
    column = 3 + 3 * ha + 2
    cut = coordinates.torsion_cuts[ha]
    flipped = features.clone()
    flipped[:, column] = cut + torch.remainder(features[:, column] + 2 * math.pi / 3 - cut, 2 * math.pi)
    rebuilt, _ = coordinates.inverse(flipped, frame)
    assert coordinates.valid_positions(coordinates.inverse(features, frame)[0]).all()
    assert not coordinates.valid_positions(rebuilt).any()


def test_largest_gap_midpoint():
    from openmm_ddpm.coordinates.geometry import largest_gap_midpoint

    assert largest_gap_midpoint([0.0, 0.1, 0.2]) == pytest.approx(math.remainder(0.2 + (2 * math.pi - 0.2) / 2, 2 * math.pi))
    assert largest_gap_midpoint([-3.0, 3.0, 0.5]) == pytest.approx((-3.0 + 0.5) / 2)  # widest gap: -3 to 0.5


def test_domain_rejects_bad_features_and_torsion_cuts_follow_the_data(coordinates, alanine):
    positions = perturbed(alanine[1], 50, scale=0.02)
    features, _ = coordinates.forward(positions)
    assert coordinates.in_domain(features).all()
    bad = features[:4].clone()
    bad[0, 0] = -0.1            # negative bond
    bad[1, 4] = math.pi + 0.1   # angle beyond pi
    bad[2, 5] = coordinates.torsion_cuts[0] - 0.01  # torsion below its window
    bad[3, 5] = coordinates.torsion_cuts[0] + 2 * math.pi  # at the window's end
    assert coordinates.in_domain(bad).tolist() == [False] * 4
    violations = coordinates.domain_violations(bad)  # each vector breaks exactly the condition set above
    assert violations["bond"].tolist() == [True, False, False, False]
    assert violations["angle"].tolist() == [False, True, False, False]
    assert violations["torsion"].any(-1).tolist() == [False, False, True, True]
    assert torch.nonzero(violations["torsion"])[:, 1].tolist() == [0, 0]
    rebuilt, _ = coordinates.inverse(bad, coordinates.frame(positions[:4]))
    assert torch.isnan(rebuilt).any(dim=-1).sum(dim=-1).eq(21).all()  # all but the frame origin

    cuts = coordinates.fit_torsion_cuts(positions)
    torsions = coordinates.feature_torsions(positions)
    distance = torch.remainder(torsions - cuts + math.pi, 2 * math.pi) - math.pi
    assert distance.abs().min() > 0.5  # the cut lies far from every sample: mid-way across the widest gap
    features, _ = coordinates.forward(positions)
    back, _ = coordinates.inverse(features, coordinates.frame(positions))
    assert torch.allclose(back, positions, atol=1e-10)


def test_diffusion_proposals_in_internal_coordinates(alanine):
    """Candidates keep the current frame; their log q is log_prob's; mirror images are outside the support."""
    from openmm_ddpm.coordinates import Representation
    from openmm_ddpm.model import ConditionedMLP, DiffusionProposalModel, EDMDiffusion
    from openmm_ddpm.settings import DiffusionSettings

    coordinates = InternalCoordinates.from_system(alanine[0].system, alanine[1])
    assert [c for c, _ in coordinates.centres] == [8]
    data = perturbed(alanine[1], 300, scale=0.003, seed=5)
    representation = Representation.fit(coordinates, data, np.random.default_rng(0))
    network = ConditionedMLP(60, width=16, depth=1).double()  # zero output layer: a Gaussian fit of the data
    model = DiffusionProposalModel(EDMDiffusion(network, DiffusionSettings(n_steps=6)), representation)
    current = model.relabel(data[:1].numpy(), np.random.default_rng(0))[0]  # as the move does first
    temperature = 300 * unit.kelvin
    candidates, log_q, log_q_current = model.sample_and_score(16, temperature, current, torch.Generator().manual_seed(0))
    valid = np.isfinite(log_q)
    assert valid.sum() >= 8 and np.isfinite(log_q_current)
    a0, a1, a2 = coordinates.order[:3]
    assert np.allclose(candidates[valid][:, a0], current[a0], atol=1e-12)
    direction = candidates[valid][:, a1] - candidates[valid][:, a0]
    expected = (current[a1] - current[a0]) / np.linalg.norm(current[a1] - current[a0])
    assert np.allclose(direction / np.linalg.norm(direction, axis=-1, keepdims=True), expected, atol=1e-10)
    assert np.allclose(model.log_prob(candidates[valid], temperature), log_q[valid], atol=1e-8)
    assert np.isnan(model.log_prob(-current[None], temperature)).all()

    # scoring on the way out (analysis, generation) gives log_prob's values, multiplicity and Jacobians included
    torch.manual_seed(3)
    for parameter in network.parameters():
        parameter.data.add_(0.05 * torch.randn_like(parameter))  # a nonlinear flow, not a Gaussian
    positions, log_q_forward = model.sample(16, temperature, torch.Generator().manual_seed(4), current,
                                            score_on_the_way_out=True)
    scored = np.isfinite(log_q_forward)
    assert scored.sum() >= 8
    np.testing.assert_allclose(log_q_forward[scored], model.log_prob(positions[scored], temperature), atol=1e-7)
    if not scored.all():
        assert np.isnan(model.log_prob(positions[~scored], temperature)).all()


def _energy(system, positions):
    import openmm

    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(np.asarray(positions))
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def test_rotor_groups_are_found_and_verified_by_energy(alanine):
    coordinates = InternalCoordinates.from_system(alanine[0].system, alanine[1])
    assert sorted(sorted(h) for h, _ in coordinates.rotor_groups) == [[0, 2, 3], [11, 12, 13], [19, 20, 21]]
    import copy

    import openmm

    system = copy.deepcopy(alanine[0].system)
    nonbonded = [f for f in system.getForces() if isinstance(f, openmm.NonbondedForce)][0]
    charge, sigma, epsilon = nonbonded.getParticleParameters(12)
    nonbonded.setParticleParameters(12, charge * 1.5, sigma, epsilon)  # HB2 no longer equivalent
    broken = InternalCoordinates.from_system(system, alanine[1])
    assert sorted(sorted(h) for h, _ in broken.rotor_groups) == [[0, 2, 3], [19, 20, 21]]


def test_relabelling_keeps_the_energy_and_lands_in_the_rotor_windows(alanine):
    system = alanine[0].system
    coordinates = InternalCoordinates.from_system(system, alanine[1])
    frames = perturbed(alanine[1], 40, scale=0.01, seed=6)
    # windows sized on the data: as wide as the hydrogens' largest gap, within [120, 170] degrees
    coordinates.fit(perturbed(alanine[1], 40, scale=0.001, seed=6), np.random.default_rng(0))
    narrow = np.degrees([float(coordinates.torsion_widths[rows[0]]) for _, rows in coordinates.rotor_groups])
    assert np.all(narrow >= 120.0) and np.all(narrow < 125.0)  # near-rigid groups, 120 degrees apart
    coordinates.fit(frames, np.random.default_rng(0))
    wide = np.degrees([float(coordinates.torsion_widths[rows[0]]) for _, rows in coordinates.rotor_groups])
    assert np.all(wide > narrow + 10.0) and np.all(wide <= 170.0)
    relabelled = coordinates.relabel(frames, np.random.default_rng(1))
    log_n = coordinates.log_multiplicity(relabelled)
    assert torch.isfinite(log_n).all()
    per_group = torch.exp(log_n)  # product of n over 3 groups, each n in {1, 2}
    assert set(per_group.round().int().tolist()) <= {1, 2, 4, 8}
    for original, moved in zip(frames[:5], relabelled[:5]):
        assert _energy(system, moved.numpy()) == pytest.approx(_energy(system, original.numpy()), abs=1e-6)
    features, _ = coordinates.forward(relabelled)
    assert coordinates.in_domain(features).all()
    back, _ = coordinates.inverse(features, coordinates.frame(relabelled))
    assert torch.allclose(back, relabelled, atol=1e-10)


def test_multiplicities_make_every_unlabelled_configuration_count_once(alanine):
    """Sum over all 27 cyclic relabellings of 1[z in Z] / n(z) is 1: the target pi/n on Z has marginal pi."""
    import itertools

    coordinates = InternalCoordinates.from_system(alanine[0].system, alanine[1])
    frames = perturbed(alanine[1], 30, scale=0.01, seed=7)
    coordinates.fit(frames, np.random.default_rng(0))
    groups = [h for h, _ in coordinates.rotor_groups]
    for frame in frames[:10]:
        total = 0.0
        for shifts in itertools.product(range(3), repeat=len(groups)):
            z = frame.clone()
            for hydrogens, shift in zip(groups, shifts):
                z[list(hydrogens)] = frame[[hydrogens[(shift + m) % 3] for m in range(3)]]
            log_n = coordinates.log_multiplicity(z[None])[0]
            total += math.exp(-log_n.item()) if torch.isfinite(log_n) else 0.0
        assert total == pytest.approx(1.0, abs=1e-12)


def test_generative_moves_on_alanine_stay_in_the_relabelled_space(alanine):
    """Whole move on a molecule: state relabelled into Z, chirality kept, energies finite."""
    import openmm
    from openmmtools import cache, states

    from openmm_ddpm.coordinates import Representation
    from openmm_ddpm.model import ConditionedMLP, DiffusionProposalModel, EDMDiffusion
    from openmm_ddpm.moves import GenerativeProposal
    from openmm_ddpm.settings import DiffusionSettings

    system, reference = alanine[0].system, alanine[1]
    coordinates = InternalCoordinates.from_system(system, reference)
    data = perturbed(reference, 300, scale=0.003, seed=8)
    representation = Representation.fit(coordinates, data, np.random.default_rng(0))
    network = ConditionedMLP(60, width=16, depth=1).double()
    model = DiffusionProposalModel(EDMDiffusion(network, DiffusionSettings(n_steps=6)), representation)
    proposal = GenerativeProposal(model, n_candidates=4, random_state=3)
    thermodynamic_state = states.ThermodynamicState(system, 300 * unit.kelvin)
    sampler_state = states.SamplerState(data[0].numpy() * unit.nanometer)  # a state like the model's data
    context_cache = cache.ContextCache(platform=openmm.Platform.getPlatformByName("Reference"))
    for _ in range(15):
        proposal.apply(thermodynamic_state, sampler_state, context_cache)
        x = sampler_state.positions.value_in_unit(unit.nanometer)[None]
        assert torch.isfinite(coordinates.log_multiplicity(x)).all()
        assert coordinates.valid_positions(x).all()
        assert np.isfinite(_energy(system, x[0]))
    assert proposal.statistics.n_moves == 15 and proposal.statistics.n_current_outside_support == 0
    assert proposal.statistics.n_accepted > 0
